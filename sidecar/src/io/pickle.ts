/**
 * A restricted reader of Python pickles, for the state dicts `torch.save` writes (pytorch_model.bin).
 * Like `torch.load(weights_only=True)`, it runs nothing: the only callables it accepts are the few a
 * state dict is made of (OrderedDict, torch's tensor and parameter rebuilders, storage types), each
 * interpreted here; any other global stops the read with its name.
 */

/** A storage a tensor views: the persistent id torch.save writes (its data is elsewhere in the file). */
export interface PickledStorage {
  kind: 'storage';
  /** torch's storage class name (FloatStorage, HalfStorage, …). */
  type: string;
  /** The record (zip: data/<key>) or the legacy format's storage key. */
  key: string;
  location: string;
  numel: number;
}

/** torch._utils._rebuild_tensor_v2's arguments: a strided view of a storage. */
export interface PickledTensor {
  kind: 'tensor';
  storage: PickledStorage;
  offset: number;
  shape: number[];
  stride: number[];
}

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | Map<PyValue, PyValue> | PyGlobal | PickledStorage | PickledTensor;

/** A module-level name the pickle refers to (a class or function). */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

export class PickleError extends Error {}
/** The pickle ends before its STOP: more of the file may hold the rest (the legacy format's reads grow). */
export class TruncatedPickleError extends PickleError {}

/** Integers a state dict's pickle holds are sizes and offsets; the legacy magic number is the longest (10 bytes). */
const MAX_LONG_BYTES = 16;

/** torch storage classes a state dict may name (torch.FloatStorage, …; newer torch writes these too). */
export const TORCH_STORAGE_TYPES = ['FloatStorage', 'HalfStorage', 'BFloat16Storage', 'DoubleStorage', 'LongStorage', 'IntStorage', 'ShortStorage', 'CharStorage', 'ByteStorage', 'BoolStorage'];

/** The callables a state dict's pickle may call, and what each builds. */
const REBUILDERS: Record<string, (args: PyValue[]) => PyValue> = {
  'collections.OrderedDict': () => new Map(),
  'torch._utils._rebuild_tensor_v2': (a) => tensorOf(a),
  'torch._utils._rebuild_tensor': (a) => tensorOf(a),
  // nn.Parameter(data, requires_grad, hooks[, state]): the data.
  'torch._utils._rebuild_parameter': (a) => a[0] as PyValue,
  'torch._utils._rebuild_parameter_with_state': (a) => a[0] as PyValue,
  'torch.Size': (a) => (Array.isArray(a[0]) ? a[0] : []),
};

function tensorOf(a: PyValue[]): PickledTensor {
  const [storage, offset, shape, stride] = a;
  const ints = (v: PyValue | undefined, what: string) => {
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0)) throw new PickleError(`a tensor's ${what} is not a tuple of sizes`);
    return v as number[];
  };
  if (!storage || typeof storage !== 'object' || !('kind' in storage) || storage.kind !== 'storage') throw new PickleError("a tensor's storage is not a saved storage");
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) throw new PickleError("a tensor's storage offset is not a size");
  const s = ints(shape, 'shape');
  const st = ints(stride, 'stride');
  if (st.length !== s.length) throw new PickleError(`a tensor's stride (${st.length} entries) does not match its shape (${s.length})`);
  return { kind: 'tensor', storage, offset, shape: s, stride: st };
}

const isGlobal = (v: PyValue | undefined): v is PyGlobal => v instanceof PyGlobal;
const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

/**
 * Reads one pickle from `bytes` at `start`; `persistentLoad` turns persistent ids (BINPERSID) into
 * values. Returns the value and the offset after its STOP (the legacy torch format puts several
 * pickles back to back).
 */
export function unpickle(bytes: Uint8Array, persistentLoad: (pid: PyValue) => PyValue, start = 0): { value: PyValue; end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const strict = new TextDecoder('utf-8', { fatal: true });
  const utf8 = {
    decode(b: Uint8Array): string {
      try {
        return strict.decode(b);
      } catch {
        throw new PickleError(`a string at offset ${pos - b.length} is not valid UTF-8`);
      }
    },
  };
  let pos = start;
  const stack: StackItem[] = [];
  const memo = new Map<number, PyValue>();
  const need = (n: number) => {
    if (!Number.isSafeInteger(n) || n < 0) throw new PickleError(`malformed pickle: a length of ${n} at offset ${pos}`);
    if (pos + n > bytes.length) throw new TruncatedPickleError(`truncated pickle: ${n} bytes needed at offset ${pos}, ${bytes.length - pos} left`);
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => bytes[need(1)]!;
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = () => {
    const n = view.getBigUint64(need(8), true);
    if (n > BigInt(bytes.length)) throw new PickleError(`a length of ${n} runs past the pickle`);
    return Number(n);
  };
  const raw = (n: number) => bytes.subarray(need(n), pos);
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) throw new TruncatedPickleError('truncated pickle: a text field has no end of line');
    const s = latin1.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw new PickleError('malformed pickle: the stack is empty where a value is needed');
    return v;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw new PickleError('malformed pickle: no value on the stack');
    return v;
  };
  const popMark = (): PyValue[] => {
    const at = stack.lastIndexOf(MARK);
    if (at < 0) throw new PickleError('malformed pickle: no MARK');
    const items = stack.splice(at) as PyValue[];
    items.shift();
    return items;
  };
  const signed = (b: Uint8Array) => {
    if (b.length > MAX_LONG_BYTES) throw new PickleError(`an integer of ${b.length} bytes: no size or offset is that long`);
    let n = 0n;
    for (let i = b.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
    if (b.length && b[b.length - 1]! & 0x80) n -= 1n << BigInt(8 * b.length);
    return Number.isSafeInteger(Number(n)) ? Number(n) : n;
  };
  const global = (module: string, name: string): PyGlobal => {
    const g = new PyGlobal(module, name);
    const allowed = g.qualified in REBUILDERS || (module === 'torch' && TORCH_STORAGE_TYPES.includes(name));
    if (!allowed) throw new PickleError(`the pickle refers to ${g.qualified}, which a plain state dict does not: refusing it (only tensors in dicts are read)`);
    return g;
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!isGlobal(fn)) throw new PickleError('malformed pickle: REDUCE without a callable');
    const rebuild = REBUILDERS[fn.qualified];
    if (!rebuild) throw new PickleError(`the pickle calls ${fn.qualified}, which a plain state dict does not`);
    return rebuild(Array.isArray(args) ? args : []);
  };
  const setItems = (target: PyValue, items: PyValue[]) => {
    if (!(target instanceof Map)) throw new PickleError('malformed pickle: SETITEM(S) on something that is not a dict');
    if (items.length % 2) throw new PickleError('malformed pickle: SETITEMS with a key and no value');
    for (let i = 0; i + 1 < items.length; i += 2) target.set(items[i]!, items[i + 1]!);
  };
  const append = (target: PyValue, items: PyValue[]) => {
    if (!Array.isArray(target)) throw new PickleError('malformed pickle: APPEND(S) on something that is not a list');
    for (const item of items) target.push(item); // not push(...items): a long list would overflow the call stack
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw new PickleError('pickle protocol above 5');
        break;
      case 0x95: // FRAME (protocol 4): the length of what follows, nothing to do
        need(8);
        break;
      case 0x2e: // STOP
        return { value: pop(), end: pos };
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(view.getInt32(need(4), true));
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: // LONG1
        stack.push(signed(raw(u8())));
        break;
      case 0x8b: // LONG4
        stack.push(signed(raw(u32())));
        break;
      case 0x49: {
        // INT (text): protocol 0's ints, and its booleans I01 / I00
        const s = line();
        stack.push(s === '01' ? true : s === '00' ? false : Number.parseInt(s, 10));
        break;
      }
      case 0x4c: // LONG (text, with a trailing L)
        stack.push(Number.parseInt(line().replace(/L$/, ''), 10));
        break;
      case 0x47: // BINFLOAT (big-endian)
        stack.push(view.getFloat64(need(8), false));
        break;
      case 0x58: // BINUNICODE
        stack.push(utf8.decode(raw(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(utf8.decode(raw(u8())));
        break;
      case 0x8d: // BINUNICODE8
        stack.push(utf8.decode(raw(u64())));
        break;
      case 0x54: // BINSTRING (Python 2 str)
        stack.push(latin1.decode(raw(view.getInt32(need(4), true))));
        break;
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1.decode(raw(u8())));
        break;
      case 0x42: // BINBYTES
        stack.push(raw(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(raw(u8()).slice());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x64: {
        // DICT
        const m = new Map<PyValue, PyValue>();
        setItems(m, popMark());
        stack.push(m);
        break;
      }
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x70: // PUT (text)
        memo.set(Number.parseInt(line(), 10), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: // LONG_BINGET
      case 0x67: {
        // GET (text)
        const k = op === 0x68 ? u8() : op === 0x6a ? u32() : Number.parseInt(line(), 10);
        if (!memo.has(k)) throw new PickleError(`malformed pickle: memo ${k} was never stored`);
        stack.push(memo.get(k)!);
        break;
      }
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw new PickleError('malformed pickle: STACK_GLOBAL without names');
        stack.push(global(module, name));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args)
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: // BUILD: state for the object below (OrderedDict's _metadata, a tensor's); nothing a weight needs
        pop();
        top();
        break;
      case 0x51: // BINPERSID
        stack.push(persistentLoad(pop()));
        break;
      case 0x50: // PERSID (text)
        stack.push(persistentLoad(line()));
        break;
      case 0x30: // POP
        stack.pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      default:
        throw new PickleError(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at offset ${pos - 1}`);
    }
  }
}
