// The read barrier of a multi-node server: before a gateway reads its views, a Raft read
// index on the namespace's shard (coalesced: every request arriving during one round trip
// shares the next), then a wait until the views have folded up to it. So a write
// acknowledged through any node is visible here, and reads never go back in time.

import { FreshCall } from "../base/mod.ts";
import { CompositionError, type NamespaceRef, namespaceRoutingKey } from "../composition/mod.ts";
import { type DeltaLog, LogError, type ShardMap } from "../log/mod.ts";
import type { ReadBarrier } from "../s3/mod.ts";
import type { ViewStore } from "../view/mod.ts";

export function clusterReadBarrier(options: {
  deltaLog: DeltaLog;
  views: ViewStore;
  shardMap: ShardMap;
}): ReadBarrier {
  const { deltaLog, views, shardMap } = options;
  const perShard = new Map<number, FreshCall<void>>();
  for (const range of shardMap.ranges()) {
    const shardId = range.shardId;
    perShard.set(
      shardId,
      new FreshCall(async () => {
        let index: number;
        try {
          index = await deltaLog.readBarrier(shardId);
        } catch (e) {
          if (e instanceof LogError && e.code === "unavailable") {
            throw new CompositionError("unavailable", e.message);
          }
          throw e;
        }
        await views.whenFolded(shardId, index);
      }),
    );
  }
  return {
    async wait(ns: NamespaceRef | null): Promise<void> {
      if (ns === null) {
        await Promise.all([...perShard.values()].map((c) => c.call()));
        return;
      }
      await perShard.get(shardMap.shardForKey(namespaceRoutingKey(ns.id)))!.call();
    },
  };
}
