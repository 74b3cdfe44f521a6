/** gRPC metadata keys: lowercase letters, digits, `_`, `.` and `-`. */
const LEGAL_KEY = /^[0-9a-z_.-]+$/;

/**
 * A call's metadata, as the session's handlers read it: values by lowercase key, in the order
 * they came, `-bin` keys as bytes. Values are whatever text the header carried (a UTF-8 path
 * included); keys that are not legal gRPC metadata keys are left out.
 */
export class Metadata {
  private readonly values = new Map<string, Array<string | Buffer>>();

  add(key: string, value: string | Buffer): void {
    const k = key.toLowerCase();
    if (!LEGAL_KEY.test(k)) return;
    if (k.endsWith('-bin') !== Buffer.isBuffer(value)) return;
    const list = this.values.get(k);
    if (list) list.push(value);
    else this.values.set(k, [value]);
  }

  get(key: string): Array<string | Buffer> {
    return this.values.get(key.toLowerCase()) ?? [];
  }

  /** The first value of each key. */
  getMap(): Record<string, string | Buffer> {
    const out: Record<string, string | Buffer> = {};
    for (const [k, list] of this.values) {
      const first = list[0];
      if (first !== undefined)
        Object.defineProperty(out, k, { value: first, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
}
