import { MemoryRaftLogStore } from "../raft/mod.ts";
import { defineRaftLogStoreConformance } from "./raft_store_conformance.ts";

defineRaftLogStoreConformance("MemoryRaftLogStore", (options) => {
  let store = new MemoryRaftLogStore(options);
  const harness = {
    store,
    restart() {
      store = store.cloneDurable();
      harness.store = store;
      return Promise.resolve(store);
    },
    close: () => Promise.resolve(),
  };
  return Promise.resolve(harness);
});
