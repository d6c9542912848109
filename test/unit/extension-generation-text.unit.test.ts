/** The "Try the Model…" document: prompt, chat input, each output in a fence its text cannot close. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generationMarkdown } from '../../src/extension/model/generation-text';

describe('generation document', () => {
  it('lists the prompt and each model’s text, fenced past any backticks in them', () => {
    const md = generationMarkdown(
      'add',
      { prompt: '12+7=', input: '12+7=', chat: false, outputs: [{ label: 'fine-tuned', text: '19\n```js', tokens: 6, stop: 'eos' }, { label: 'base', text: 'x', tokens: 1, stop: 'length' }] },
      'greedy, up to 64 tokens',
    );
    assert.equal(
      md,
      '# add: prompt\n\n```text\n12+7=\n```\n\n## fine-tuned (6 tokens, ended)\n\n````text\n19\n```js\n````\n\n## base (1 token, token limit)\n\n```text\nx\n```\n\n_greedy, up to 64 tokens_\n',
    );
    const cls = generationMarkdown('sst', { prompt: 'good fun', input: 'good fun', chat: false, outputs: [{ label: 'fine-tuned', text: 'pos', tokens: 0, classes: [{ name: 'pos', p: 0.9 }, { name: 'a|b', p: 0.1 }] }] }, 's');
    assert.ok(!cls.includes('_s_'), 'no generation settings under classes');
    assert.match(cls, /## fine-tuned: pos\n\n\| class \| probability \|\n\| --- \| ---: \|\n\| pos \| 0\.900 \|\n\| a\\\|b \| 0\.100 \|\n/);
    // A regression on a sentence pair: both texts, then each model's value (no generation settings).
    const sts = generationMarkdown('sts', { prompt: 'a cat', pair: 'a dog', input: 'a cat', chat: false, outputs: [{ label: 'fine-tuned', text: '3.2500', tokens: 0, value: 3.25 }, { label: 'base', text: '0.1000', tokens: 0, value: 0.1 }] }, 's');
    assert.equal(sts, '# sts: prompt\n\n```text\na cat\n```\n\nPaired with:\n\n```text\na dog\n```\n\n## fine-tuned: 3.2500\n\n## base: 0.1000\n');
    const chat = generationMarkdown('c', { prompt: 'hi', input: '<|im_start|>user\nhi<|im_end|>\n', chat: true, outputs: [] }, 's');
    assert.match(chat, /^# c: chat\n\n```text\nhi\n```\n\nGiven to the model as a user turn of its chat template:\n\n```text\n<\|im_start\|>user\nhi<\|im_end\|>\n\n```/);
  });
});
