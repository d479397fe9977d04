// Any node serves any request: before an operation reads this node's views (or a write
// decides on them), it waits at a read barrier, so an object acknowledged through another
// node a moment ago is seen here (read-your-writes and monotonic reads across nodes). The
// barrier is the cluster's business (a Raft read index, then the views folded up to it);
// this wrapper only says where: the namespace's shard, or every shard for a bucket listing.

import type { NamespaceRef } from "../composition/mod.ts";
import type { S3Backend } from "./backend.ts";

/** Waits until this node's views hold every write acknowledged before the call. */
export interface ReadBarrier {
  /** `ns`: the shard of one namespace; null: every shard (listing a tenant's buckets). */
  wait(ns: NamespaceRef | null): Promise<void>;
}

/** An S3Backend that passes a read barrier before each operation on `inner`. */
export class ReadBarrierBackend implements S3Backend {
  readonly #inner: S3Backend;
  readonly #barrier: ReadBarrier;

  constructor(inner: S3Backend, barrier: ReadBarrier) {
    this.#inner = inner;
    this.#barrier = barrier;
  }

  namespace(...args: Parameters<S3Backend["namespace"]>): NamespaceRef {
    return this.#inner.namespace(...args);
  }

  async createNamespace(
    ...args: Parameters<S3Backend["createNamespace"]>
  ): ReturnType<S3Backend["createNamespace"]> {
    // Creating an existing bucket answers from the views: they must be current.
    await this.#barrier.wait(this.#inner.namespace(args[0], args[1]));
    return await this.#inner.createNamespace(...args);
  }

  async deleteNamespace(
    ...args: Parameters<S3Backend["deleteNamespace"]>
  ): ReturnType<S3Backend["deleteNamespace"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.deleteNamespace(...args);
  }

  async getNamespace(
    ...args: Parameters<S3Backend["getNamespace"]>
  ): ReturnType<S3Backend["getNamespace"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.getNamespace(...args);
  }

  async listNamespaces(
    ...args: Parameters<S3Backend["listNamespaces"]>
  ): ReturnType<S3Backend["listNamespaces"]> {
    await this.#barrier.wait(null);
    return await this.#inner.listNamespaces(...args);
  }

  async putObject(...args: Parameters<S3Backend["putObject"]>): ReturnType<S3Backend["putObject"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.putObject(...args);
  }

  async headObject(
    ...args: Parameters<S3Backend["headObject"]>
  ): ReturnType<S3Backend["headObject"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.headObject(...args);
  }

  async getObject(...args: Parameters<S3Backend["getObject"]>): ReturnType<S3Backend["getObject"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.getObject(...args);
  }

  async deleteObject(
    ...args: Parameters<S3Backend["deleteObject"]>
  ): ReturnType<S3Backend["deleteObject"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.deleteObject(...args);
  }

  async copyObject(
    ...args: Parameters<S3Backend["copyObject"]>
  ): ReturnType<S3Backend["copyObject"]> {
    await this.#barrier.wait(args[0]);
    if (args[2].id !== args[0].id) await this.#barrier.wait(args[2]);
    return await this.#inner.copyObject(...args);
  }

  async listObjects(
    ...args: Parameters<S3Backend["listObjects"]>
  ): ReturnType<S3Backend["listObjects"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.listObjects(...args);
  }

  async createMultipartUpload(
    ...args: Parameters<S3Backend["createMultipartUpload"]>
  ): ReturnType<S3Backend["createMultipartUpload"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.createMultipartUpload(...args);
  }

  async uploadPart(
    ...args: Parameters<S3Backend["uploadPart"]>
  ): ReturnType<S3Backend["uploadPart"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.uploadPart(...args);
  }

  async completeMultipartUpload(
    ...args: Parameters<S3Backend["completeMultipartUpload"]>
  ): ReturnType<S3Backend["completeMultipartUpload"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.completeMultipartUpload(...args);
  }

  async abortMultipartUpload(
    ...args: Parameters<S3Backend["abortMultipartUpload"]>
  ): ReturnType<S3Backend["abortMultipartUpload"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.abortMultipartUpload(...args);
  }

  async listParts(...args: Parameters<S3Backend["listParts"]>): ReturnType<S3Backend["listParts"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.listParts(...args);
  }

  async listMultipartUploads(
    ...args: Parameters<S3Backend["listMultipartUploads"]>
  ): ReturnType<S3Backend["listMultipartUploads"]> {
    await this.#barrier.wait(args[0]);
    return await this.#inner.listMultipartUploads(...args);
  }
}
