/** The reports the Runs view lists (src/extension/model/reports.ts): which files, their labels, newest first. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { findReportFiles, panelKindOfFile, readReports, reportDescription, reportKindOf, reportLabel, type ReportInfo } from '../../src/extension/model/reports';

const tmp = mkdtempSync(join(tmpdir(), 'peft-reports-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function write(rel: string, ageS: number): string {
  const p = join(tmp, rel);
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, '{}');
  const t = new Date(Date.now() - ageS * 1000);
  utimesSync(p, t, t);
  return p;
}

describe('reports beside the runs', () => {
  it('knows the report files by name; an allocation a spec trains with is not one', () => {
    const cases: [string, string | undefined, string?][] = [
      ['/w/runs/importance-a-1/importance.json', 'importance'],
      ['/w/runs/importance-a-1/allocation.json', 'budget'],
      ['/w/runs/importance-a-1/allocation-12.json', 'budget'],
      ['/w/runs/localize-a-1/localize.json', 'localization'],
      ['/w/runs/merge-ties-1/merge.json', 'merge'],
      ['/w/runs/eval-test-1/evaluation.json', 'evaluation'],
      ['/w/runs/importance-a-1/allocation.spt-0.5pct.allocation.json', undefined],
      ['/w/runs/a/compare.json', undefined, 'comparisons show as their runs'],
      ['/w/allocation-x.json', undefined],
    ];
    for (const [file, kind, why] of cases) assert.equal(reportKindOf(file), kind, why ?? file);
  });

  it('tells which panel shows a file by its name, so that a palette command takes only an active file that fits', () => {
    const cases: [string, string | undefined][] = [
      ['/w/runs/i/importance.json', 'importance'],
      ['/w/runs/i/allocation-3.json', 'budget'],
      ['/w/runs/compare-x/compare.json', 'comparison'],
      ['/w/runs/l/localize.json', 'localization'],
      ['/w/runs/e/evaluation.json', 'evaluation'],
      // not a report of any panel: the command asks for the file instead
      ['/w/package.json', undefined],
      ['/w/tiny.peft.json', undefined],
      ['/w/runs/m/merge.json', undefined],
      ['/w/runs/a/status.json', undefined],
    ];
    for (const [file, kind] of cases) assert.equal(panelKindOfFile(file), kind, file);
  });

  it('labels a report by its folder (and a later allocation by its file), described by kind and place', () => {
    const r = (kind: ReportInfo['kind'], file: string): ReportInfo => ({ kind, file, mtime: 0 });
    assert.equal(reportLabel(r('importance', '/w/runs/importance-tiny-20250102-030405/importance.json')), 'importance-tiny-20250102-030405');
    assert.equal(reportLabel(r('budget', '/w/runs/importance-tiny-1/allocation.json')), 'importance-tiny-1');
    assert.equal(reportLabel(r('budget', '/w/runs/importance-tiny-1/allocation-2.json')), 'importance-tiny-1/allocation-2.json');
    assert.equal(reportDescription(r('localization', '/w/runs/localize-a-1/localize.json'), '/w'), 'skill localization · runs');
    assert.equal(reportDescription(r('merge', '/w/merge-ties-1/merge.json'), '/w'), 'merged model · .');
    assert.equal(reportDescription(r('importance', '/elsewhere/runs/i/importance.json'), '/w'), 'layer importance · /elsewhere/runs');
  });

  it('reads the files found (duplicates once, vanished ones skipped), newest first, at most the limit', async () => {
    const older = write('runs/importance-a/importance.json', 300);
    const newer = write('runs/localize-b/localize.json', 10);
    const middle = write('runs/importance-a/allocation.json', 100);
    const list = await readReports([older, newer, middle, older, join(tmp, 'runs/gone/merge.json'), join(tmp, 'notes.json')]);
    assert.deepEqual(
      list.map((r) => [r.kind, r.file]),
      [
        ['localization', newer],
        ['budget', middle],
        ['importance', older],
      ],
    );
    assert.equal((await readReports([older, newer, middle], 2)).length, 2);
  });

  it('finds report files a few folders down, not inside checkpoints, adapters or node_modules', async () => {
    const root = join(tmp, 'outside');
    const want = [write('outside/importance-x/importance.json', 5), write('outside/sub/merge-y/merge.json', 5)];
    write('outside/run-1/checkpoints/step-2/merge.json', 5);
    write('outside/node_modules/pkg/importance.json', 5);
    write('outside/a/b/c/d/localize.json', 5);
    assert.deepEqual((await findReportFiles(root, 2)).sort(), want.sort());
  });
});
