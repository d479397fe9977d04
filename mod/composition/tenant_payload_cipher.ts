// KmsPayloadCipher: the PayloadCipher port over the tenant's own KMS. Delta payloads are
// sealed with sealTenantPayload() under a per-tenant data key that the tenant's KEK wraps,
// so destroying the KEK (crypto-shred) makes every payload of that tenant unreadable.
// Composition tenant ids are 16 bytes; the KMS names a tenant by their lower-case hex.

import { AeadError } from "../crypto/mod.ts";
import {
  openTenantPayload,
  sealTenantPayload,
  type TenantDataKeys,
  TenantKeyDestroyedError,
  TenantKeyNotFoundError,
  TenantPayloadError,
  TenantUnwrapError,
} from "../keys/mod.ts";
import { toHex, utf8 } from "./bytes.ts";
import { PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX } from "./codec.ts";
import { TENANT_ID_BYTES } from "./namespace.ts";
import { type PayloadCipher, PayloadUnreadableError } from "./payload_cipher.ts";

/** Binds every sealed payload to its purpose (the tenant id is bound by the payload format). */
const PAYLOAD_AAD = utf8("kiseki/delta-payload/kms/v1");

export interface KmsPayloadCipherOptions {
  /** Per-tenant data keys over the tenant KMS. */
  keys: TenantDataKeys;
  /**
   * Create a tenant's KEK on its first seal when the KMS has none (a single node with the
   * built-in KMS). Off: the control plane creates tenant keys, and a seal for a tenant
   * without one fails. A destroyed KEK is never recreated either way.
   */
  createKeys?: boolean;
}

/** The KMS's name of a 16-byte composition tenant id. */
export function kmsTenantName(tenantId: Uint8Array): string {
  return toHex(tenantId);
}

/**
 * Seals delta payloads under the tenant's KMS. `open` maps every permanent failure (key
 * destroyed or never created, wrapped key or payload not authentic, malformed payload) to
 * PayloadUnreadableError and lets anything else (KMS unreachable) through, so the views
 * retry it. `seal` fails with PayloadUnreadableError once the tenant's key is destroyed.
 */
export class KmsPayloadCipher implements PayloadCipher {
  readonly #keys: TenantDataKeys;
  readonly #createKeys: boolean;

  constructor(options: KmsPayloadCipherOptions) {
    this.#keys = options.keys;
    this.#createKeys = options.createKeys ?? false;
  }

  async seal(tenantId: Uint8Array, plaintext: Uint8Array): Promise<Uint8Array> {
    const name = tenantName(tenantId);
    let sealed: Uint8Array;
    try {
      sealed = await this.#sealOnce(name, plaintext);
    } catch (e) {
      if (!(e instanceof TenantKeyNotFoundError) || !this.#createKeys) throw unreadableIf(e);
      try {
        await this.#keys.kms.createKey(name);
        sealed = await this.#sealOnce(name, plaintext);
      } catch (again) {
        throw unreadableIf(again);
      }
    }
    const overhead = sealed.length - plaintext.length;
    if (overhead > PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX) {
      // A KMS whose wrapped keys are this long cannot back delta payloads: a configuration
      // problem, reported instead of producing deltas that exceed their limit.
      throw new RangeError(
        `tenant KMS ${this.#keys.kms.provider} adds ${overhead} bytes to a payload ` +
          `(max ${PAYLOAD_CIPHER_OVERHEAD_BYTES_MAX}): its wrapped data keys are too long`,
      );
    }
    return sealed;
  }

  async open(tenantId: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
    const name = tenantName(tenantId);
    try {
      return await openTenantPayload(this.#keys, name, sealed, PAYLOAD_AAD);
    } catch (e) {
      throw unreadableIf(e);
    }
  }

  /**
   * Resolves when the tenant's key can seal now; PayloadUnreadableError once it is destroyed
   * (crypto-shred). Cheap after the first call: the data key is cached until a destroy.
   */
  async probe(tenantId: Uint8Array): Promise<void> {
    // Every object operation probes: a held data key answers without sealing anything.
    const name = tenantName(tenantId);
    try {
      await this.#keys.ready(name);
    } catch (e) {
      if (!(e instanceof TenantKeyNotFoundError) || !this.#createKeys) throw unreadableIf(e);
      try {
        await this.#keys.kms.createKey(name);
        await this.#keys.ready(name);
      } catch (again) {
        throw unreadableIf(again);
      }
    }
  }

  /** Drops the keys held for the tenant (a shred announced by another node). */
  forget(tenantId: Uint8Array): void {
    this.#keys.forget(tenantName(tenantId));
  }

  #sealOnce(name: string, plaintext: Uint8Array): Promise<Uint8Array> {
    return sealTenantPayload(this.#keys, name, plaintext, PAYLOAD_AAD);
  }
}

function tenantName(tenantId: Uint8Array): string {
  if (!(tenantId instanceof Uint8Array) || tenantId.length !== TENANT_ID_BYTES) {
    throw new PayloadUnreadableError(
      `tenant id must be ${TENANT_ID_BYTES} bytes, got ${tenantId?.length}`,
    );
  }
  return kmsTenantName(tenantId);
}

/** The failures that can never succeed later become PayloadUnreadableError. */
function unreadableIf(e: unknown): unknown {
  if (
    e instanceof TenantKeyDestroyedError || e instanceof TenantKeyNotFoundError ||
    e instanceof TenantUnwrapError || e instanceof TenantPayloadError || e instanceof AeadError
  ) {
    return new PayloadUnreadableError(e.message, { cause: e });
  }
  return e;
}
