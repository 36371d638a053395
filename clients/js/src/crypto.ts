// End-to-end encryption of message payloads with WebCrypto (docs/protocol.md §5.11), byte for
// byte what rtm-client does: HKDF-SHA256 over the cipher key with the 32-byte salt, AES-GCM with
// a random 12-byte nonce, and the layout `version(1) kind(1) nonce(12) ciphertext||tag`.

import { Code, rtmError } from './errors.js';
import type { Payload } from './codec/model.js';
import type { EncryptionMode } from './types.js';

const VERSION = 1;
const NONCE_LEN = 12;
const HEADER_LEN = 2 + NONCE_LEN;
/** Bytes that sealing adds to a payload. */
export const ENCRYPTION_OVERHEAD = HEADER_LEN + 16;
const SALT_LEN = 32;

/** WebCrypto's view of bytes (our arrays never share memory). */
function bytes(u: Uint8Array): Uint8Array<ArrayBuffer> {
  return u as Uint8Array<ArrayBuffer>;
}

/** The WebCrypto of this platform (browsers and Node 20 both have `globalThis.crypto`). */
function subtle(): SubtleCrypto {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (!c?.subtle) {
    throw rtmError('new', Code.INVALID_ENCRYPTION_PARAMETER, 'this platform has no WebCrypto (crypto.subtle): encryption needs a secure context or Node 20+');
  }
  return c.subtle;
}

/** Checks the encryption settings when the client is made; throws `-10020` if they are wrong. */
export function checkEncryption(mode: EncryptionMode | undefined, key: string | undefined, salt: Uint8Array | undefined): void {
  if (mode === undefined || mode === 'NONE') return;
  if (mode !== 'AES_128_GCM' && mode !== 'AES_256_GCM') {
    throw rtmError('new', Code.INVALID_ENCRYPTION_PARAMETER, `unknown encryption mode ${String(mode)}`);
  }
  if (typeof key !== 'string' || key.length === 0) {
    throw rtmError('new', Code.INVALID_ENCRYPTION_PARAMETER, 'encryption needs a cipherKey (a non-empty string)');
  }
  if (salt !== undefined && !(salt instanceof Uint8Array)) {
    throw rtmError('new', Code.INVALID_ENCRYPTION_PARAMETER, 'the salt must be a Uint8Array');
  }
  if (salt && salt.length > SALT_LEN) {
    throw rtmError('new', Code.INVALID_ENCRYPTION_PARAMETER, `the salt is ${salt.length} bytes long; it must be at most ${SALT_LEN}`);
  }
}

/** Seals and opens payloads with one key. */
export class Cipher {
  readonly #key: Promise<CryptoKey>;

  private constructor(key: Promise<CryptoKey>) {
    this.#key = key;
  }

  /** The cipher of a configuration, or null without encryption (call `checkEncryption` first). */
  static from(mode: EncryptionMode | undefined, cipherKey: string | undefined, salt: Uint8Array | undefined): Cipher | null {
    if (mode === undefined || mode === 'NONE') return null;
    const bits = mode === 'AES_128_GCM' ? 128 : 256;
    const info = new TextEncoder().encode(`rtm e2e v1 AES-${bits}-GCM`);
    const padded = new Uint8Array(SALT_LEN);
    if (salt) padded.set(salt);
    const ikm = new TextEncoder().encode(cipherKey ?? '');
    const key = (async () => {
      const s = subtle();
      const base = await s.importKey('raw', ikm, 'HKDF', false, ['deriveKey']);
      return s.deriveKey(
        { name: 'HKDF', hash: 'SHA-256', salt: padded, info },
        base,
        { name: 'AES-GCM', length: bits },
        false,
        ['encrypt', 'decrypt'],
      );
    })();
    // A failure shows when sealing; do not let it go unhandled meanwhile.
    key.catch(() => undefined);
    return new Cipher(key);
  }

  /** Seals a text or binary payload (an already sealed one is passed on). */
  async seal(payload: Payload): Promise<Payload> {
    if (payload.kind === 'Encrypted') return payload;
    const kind = payload.kind === 'Text' ? 0 : 1;
    const plain = payload.kind === 'Text' ? new TextEncoder().encode(payload.value) : payload.value;
    const nonce = new Uint8Array(NONCE_LEN);
    globalThis.crypto.getRandomValues(nonce);
    const aad = Uint8Array.of(VERSION, kind);
    let sealed: ArrayBuffer;
    try {
      sealed = await subtle().encrypt({ name: 'AES-GCM', iv: nonce, additionalData: aad, tagLength: 128 }, await this.#key, bytes(plain));
    } catch (e) {
      throw rtmError('publish', Code.CHANNEL_ENCRYPT_MESSAGE_FAILED, `encryption failed: ${(e as Error).message}`);
    }
    const out = new Uint8Array(HEADER_LEN + sealed.byteLength);
    out.set(aad, 0);
    out.set(nonce, 2);
    out.set(new Uint8Array(sealed), HEADER_LEN);
    return { kind: 'Encrypted', value: out };
  }

  /**
   * Opens a sealed payload into what the publisher sent; a payload it cannot open (another key,
   * another layout, damage) comes back as it was, still `Encrypted`.
   */
  async open(payload: Payload): Promise<Payload> {
    if (payload.kind !== 'Encrypted') return payload;
    const sealedBytes = payload.value;
    if (sealedBytes.length < ENCRYPTION_OVERHEAD || sealedBytes[0] !== VERSION || (sealedBytes[1] !== 0 && sealedBytes[1] !== 1)) return payload;
    const kind = sealedBytes[1];
    try {
      const plain = new Uint8Array(
        await subtle().decrypt(
          { name: 'AES-GCM', iv: bytes(sealedBytes.subarray(2, HEADER_LEN)), additionalData: bytes(sealedBytes.subarray(0, 2)), tagLength: 128 },
          await this.#key,
          bytes(sealedBytes.subarray(HEADER_LEN)),
        ),
      );
      if (kind === 1) return { kind: 'Binary', value: plain };
      return { kind: 'Text', value: new TextDecoder('utf-8', { fatal: true }).decode(plain) };
    } catch {
      return payload;
    }
  }
}
