// The server's metadata plane: the lmdb Raft log, the node-to-node transport, one Raft
// group per shard driven by the multi-group host, and the delta log service on top. Every
// node in KISEKI_RAFT_PEERS starts every shard with the same voters, so the groups agree on
// membership from the first entry; a lone node is a one-voter group on the same path. A node
// not in its own KISEKI_RAFT_PEERS joins a running cluster: it starts every group with the
// existing members as voters and waits, without campaigning, until `kiseki admin node add`
// adds it as a learner (the leaders then bring it up to date and promote it).

import {
  type Config,
  formatHostPort,
  type HostPort,
  HybridLogicalClock,
  parseHostPort,
  SystemClock,
} from "../base/mod.ts";
import { counter, gauge, histogram, type Logger } from "../obs/mod.ts";
import { RaftHost, type RaftHostObserver } from "../raft/host.ts";
import type { NodeId, RaftStatus } from "../raft/mod.ts";
import type { KvEnv, KvPageKeys } from "../disk/mod.ts";
import {
  DeltaLog,
  LmdbRaftLogStore,
  LogCompactor,
  openRaftLogEnv,
  ShardStateMachine,
} from "../log/mod.ts";
import { readTlsMaterial, TcpRaftTransport } from "../transport/raft_transport.ts";
import {
  CLUSTER_STATE_GROUP_ID,
  type ClusterStateGroup,
  ClusterStateMachine,
} from "../control/mod.ts";
import { SnapshotStreams } from "../transport/snapshot_stream.ts";

/** Raft timing: a tick every 100 ms, elections after 1-2 s, heartbeats every tick. */
export const RAFT_TICK_MS_DEFAULT = 100;
export const RAFT_ELECTION_TICKS = 10;
export const RAFT_HEARTBEAT_TICKS = 1;
export const RAFT_REQUEST_TIMEOUT_MS = 5_000;
export const RAFT_WAITERS_PER_SHARD_MAX = 4096;
export const RAFT_MESSAGE_BYTES_MAX = 1 << 20;
export const RAFT_INFLIGHT_MESSAGES_MAX = 256;
export const RAFT_UNCOMMITTED_BYTES_MAX = 64 << 20;
/** How often a leader checks whether a shard it leads belongs to another node. */
export const LEADER_BALANCE_INTERVAL_MS = 3_000;

export interface Cluster {
  host: RaftHost;
  deltaLog: DeltaLog;
  stateMachines: ReadonlyMap<number, ShardStateMachine>;
  shardIds: number[];
  transport: TcpRaftTransport;
  /** The cluster-state group (CLUSTER_STATE_GROUP_ID) on the same host. */
  clusterState: ClusterStateGroup;
  compactor: LogCompactor;
  snapshots: SnapshotStreams;
  /**
   * The Raft address of `id` while it is a member of the cluster-state group (configured, or
   * added later: its address came with the conf change or from the cluster state's records).
   */
  memberAddress(id: NodeId): HostPort | undefined;
  /** Tells the transport where member `id` listens (members added after start-up). */
  setPeerAddress(id: NodeId, addr: HostPort): void;
  /** Whether this node started as a joining member (not in its own KISEKI_RAFT_PEERS). */
  joining: boolean;
  close(): Promise<void>;
}

export interface ClusterOptions {
  config: Config;
  log: Logger;
  /** Milliseconds between Raft ticks (tests shorten it). */
  tickMs?: number;
  /** Sees each shard's state machine before anything is applied to it (views attach here). */
  onShard?: (shardId: number, stateMachine: ShardStateMachine) => void;
  /** Page keys of the raft environment (the node key store's). */
  pageKeys: KvPageKeys;
  /** The state machine of the cluster-state group (a fresh one when not given). */
  clusterStateMachine?: ClusterStateMachine;
  /** Log compaction thresholds (tests shorten them). */
  compaction?: { snapshotEntries?: number; marginEntries?: number; intervalMs?: number };
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const { config, log } = options;
  const tickMs = options.tickMs ?? RAFT_TICK_MS_DEFAULT;
  const peers = config.raftPeers.length > 0
    ? config.raftPeers
    : [{ id: config.nodeId, addr: config.raftAddr }];
  // A joining node's own id is not among the voters it starts with (see the module comment).
  const voters = peers.map((p) => p.id).sort((a, b) => a - b);
  const joining = !voters.includes(config.nodeId);
  const env: KvEnv = await openRaftLogEnv({
    dataDir: config.dataDir,
    pageKeys: options.pageKeys,
  });

  const tls = config.tls ? await readTlsMaterial(config.tls) : null;
  const transport = await TcpRaftTransport.listen({
    nodeId: config.nodeId,
    clusterId: "kiseki",
    listen: config.raftAddr,
    peers,
    tls,
    plaintextPeers: config.allowInsecure ? "any" : "loopback",
    logger: log.child({ component: "raft-transport" }),
  });

  const metrics = raftMetrics();
  const host = new RaftHost({
    nodeId: config.nodeId,
    sink: transport,
    log: log.child({ component: "raft" }),
    raft: {
      electionTick: RAFT_ELECTION_TICKS,
      heartbeatTick: RAFT_HEARTBEAT_TICKS,
      maxSizePerMsgBytes: RAFT_MESSAGE_BYTES_MAX,
      maxInflightMsgs: RAFT_INFLIGHT_MESSAGES_MAX,
      maxUncommittedEntriesBytes: RAFT_UNCOMMITTED_BYTES_MAX,
      preVote: true,
      checkQuorum: true,
      randomInt: (n) => Math.floor(Math.random() * n),
    },
    requestTimeoutMs: RAFT_REQUEST_TIMEOUT_MS,
    waitersPerGroupMax: RAFT_WAITERS_PER_SHARD_MAX,
    observer: {
      ...metrics,
      leaderChanged: (shard, lead, term) => {
        metrics.leaderChanged(shard, lead, term);
        // Only called once elections run, after `spread` below exists.
        spread.observe(shard, lead, term);
      },
    },
    // A follower too far behind for the log gets the shard's state as a stream.
    snapshotSender: (shardId, message) => snapshots.send(shardId, message),
    // Members added after start-up come with their address: dial them from now on.
    onConfChange: (shardId, change) => {
      if (change.addr === undefined || change.nodeId === config.nodeId) return;
      try {
        setPeerAddress(change.nodeId, parseHostPort(change.addr));
      } catch (e) {
        log.warn("conf change with an unusable address", {
          shard: shardId,
          peer: change.nodeId,
          addr: change.addr,
          error: (e as Error).message,
        });
      }
    },
  });
  const addresses = new Map<NodeId, HostPort>(peers.map((p) => [p.id, p.addr]));
  function setPeerAddress(id: NodeId, addr: HostPort): void {
    if (id === config.nodeId) return;
    const known = addresses.get(id);
    if (known !== undefined && known.host === addr.host && known.port === addr.port) return;
    addresses.set(id, addr);
    transport.setPeer(id, addr);
  }
  const dataShardIds = Array.from({ length: config.shardCount }, (_, i) => i);
  const spread = new LeaderSpread(host, config.nodeId, voters, dataShardIds);
  transport.onMessage((shardId, message) => host.step(shardId, message));
  const snapshots: SnapshotStreams = SnapshotStreams.attach(transport, {
    nodeId: config.nodeId,
    clusterId: "kiseki",
    // The transport's peers, so that members added later are reached too.
    addressOf: (id) => transport.peerLinks().find((p) => p.id === id)?.addr ?? null,
    tls,
    stagingDir: `${config.dataDir.replace(/\/+$/, "")}/snapshots`,
    parts: (shardId) => shards.get(shardId)?.stateMachine.durableParts(),
    deliver: (shardId, message) => host.step(shardId, message),
    report: (shardId, peer, status) => host.reportSnapshot(shardId, peer, status),
    log: log.child({ component: "raft-snapshots" }),
  });
  transport.onUnreachable((shardId, peerId) => host.reportUnreachable(shardId, peerId));

  const shards = new Map<number, { store: LmdbRaftLogStore; stateMachine: ShardStateMachine }>();
  // Every member starts each group from the same one-entry history: membership at index 1.
  const openGroupStore = (shardId: number) =>
    LmdbRaftLogStore.open({
      env,
      shardId,
      logger: log.child({ component: "raft-log", shard: shardId }),
      initial: {
        snapshot: {
          meta: { index: 1, term: 1, conf: { voters, learners: [] } },
          data: new Uint8Array([0]),
        },
        hardState: { term: 1, vote: 0, commit: 1 },
      },
    });
  // The cluster state first, so that its records replay before the shards' deltas need them.
  const clusterStateMachine = options.clusterStateMachine ?? new ClusterStateMachine();
  host.addGroup({
    shardId: CLUSTER_STATE_GROUP_ID,
    store: await openGroupStore(CLUSTER_STATE_GROUP_ID),
    stateMachine: clusterStateMachine,
    applied: 1,
  });
  for (let shardId = 0; shardId < config.shardCount; shardId++) {
    const store = await openGroupStore(shardId);
    const stateMachine = new ShardStateMachine(shardId);
    options.onShard?.(shardId, stateMachine);
    shards.set(shardId, { store, stateMachine });
    // The shard state starts from its last snapshot; committed entries after it replay.
    const snapshot = store.snapshot();
    stateMachine.restore(snapshot);
    host.addGroup({ shardId, store, stateMachine, applied: snapshot.meta.index });
  }

  gauge<"direction" | "outcome">({
    name: "kiseki_raft_snapshot_streams",
    help: "Snapshot streams to and from followers too far behind for the log, since start",
    labelNames: ["direction", "outcome"],
    collect: (set) => {
      const st = snapshots.stats();
      set({ direction: "sent", outcome: "ok" }, st.sent);
      set({ direction: "sent", outcome: "failed" }, st.sendFailures);
      set({ direction: "received", outcome: "ok" }, st.received);
      set({ direction: "received", outcome: "failed" }, st.receiveFailures);
    },
  });
  const ticker = setInterval(() => host.tick(), tickMs);
  // A lone voter, or the bootstrap node, campaigns at once instead of waiting out a timeout.
  if (voters.length === 1 || config.bootstrap) {
    host.campaign(CLUSTER_STATE_GROUP_ID);
    for (const shardId of shards.keys()) host.campaign(shardId);
  }
  startShardGauges(host, [...shards.keys()]);
  // Whoever wins a shard's first election hands it to its preferred leader.
  const balancer = voters.length > 1
    ? setInterval(() => spread.balance(), LEADER_BALANCE_INTERVAL_MS)
    : undefined;
  const compactor = new LogCompactor({
    host,
    shards,
    log: log.child({ component: "raft-compaction" }),
    ...options.compaction,
  });
  compactor.start();

  const deltaLog = new DeltaLog({
    host,
    hlc: new HybridLogicalClock({ clock: new SystemClock() }),
    shards,
    memberAddress: (id) => {
      const addr = id === config.nodeId ? config.raftAddr : addresses.get(id);
      return addr === undefined ? "unknown" : formatHostPort(addr);
    },
  });
  log.info(joining ? "metadata plane started, waiting to be added" : "metadata plane started", {
    shards: shards.size,
    voters: voters.join(","),
    raft: formatHostPort(transport.addr),
  });

  return {
    host,
    deltaLog,
    stateMachines: new Map([...shards].map(([id, s]) => [id, s.stateMachine])),
    shardIds: [...shards.keys()],
    transport,
    clusterState: {
      propose: (command) => host.propose(CLUSTER_STATE_GROUP_ID, command),
      readIndex: () => host.readIndex(CLUSTER_STATE_GROUP_ID),
    },
    compactor,
    snapshots,
    memberAddress: (id) => {
      const conf = host.conf(CLUSTER_STATE_GROUP_ID);
      if (!conf.voters.includes(id) && !conf.learners.includes(id)) return undefined;
      return id === config.nodeId ? config.raftAddr : addresses.get(id);
    },
    setPeerAddress,
    joining,
    async close() {
      clearInterval(ticker);
      clearInterval(balancer);
      await compactor.stop();
      await snapshots.close();
      await host.stop();
      await transport.close();
      await env.close();
    },
  };
}

/** The node meant to lead `shardId`: the voters in turn, so each leads about shards/N. */
export function preferredLeader(shardId: number, voters: readonly NodeId[]): NodeId {
  return voters[shardId % voters.length]!;
}

/**
 * Hands each shard this node leads but should not to its preferred leader, once that node
 * is active and has the whole log (a transfer to a lagging node would stall the shard).
 * Only start-up leadership is spread: a shard whose first leader this node saw since it
 * started is itself, still in that term (the first election of a cluster, or of a cluster
 * restarted together). A leader that a later election chose (after a crash or a partition)
 * stays where the election put it, so leadership does not chase a node that comes and goes.
 */
export class LeaderSpread {
  /** Per shard, the first leader this node saw since it started, and its term. */
  readonly #first = new Map<number, { lead: NodeId; term: number }>();

  constructor(
    readonly host: RaftHost,
    readonly self: NodeId,
    readonly voters: readonly NodeId[],
    readonly shardIds: readonly number[],
  ) {}

  /** The host's leader-change events (see RaftHostObserver.leaderChanged). */
  observe(shardId: number, lead: NodeId, term: number): void {
    if (lead !== 0 && !this.#first.has(shardId)) this.#first.set(shardId, { lead, term });
  }

  balance(): void {
    for (const shardId of this.shardIds) {
      const first = this.#first.get(shardId);
      if (first === undefined || first.lead !== this.self) continue;
      const status = this.host.status(shardId);
      if (status.role !== "leader" || status.progress === null || status.term !== first.term) {
        continue;
      }
      const want = preferredLeader(shardId, this.voters);
      if (want === this.self) continue;
      const progress = status.progress.get(want);
      if (progress?.recentActive && progress.match >= status.commit) {
        this.host.transferLeadership(shardId, want);
      }
    }
  }
}

function raftMetrics(): RaftHostObserver {
  const commitLatency = histogram({
    name: "kiseki_raft_commit_latency_seconds",
    help: "Time from proposal to applied on the proposing node",
    labelNames: ["shard"],
  });
  const persistLatency = histogram({
    name: "kiseki_raft_persist_latency_seconds",
    help: "Time to make one Ready batch durable (group commit across shards)",
  });
  const appended = counter({
    name: "kiseki_raft_entries_appended_total",
    help: "Log entries made durable",
  });
  const applied = counter({
    name: "kiseki_raft_entries_applied_total",
    help: "Committed entries applied",
    labelNames: ["shard"],
  });
  const leaderChanges = counter({
    name: "kiseki_raft_leader_changes_total",
    help: "Leader changes seen by this node",
    labelNames: ["shard"],
  });
  return {
    persisted: (_groups, entries, seconds) => {
      appended.inc({}, entries);
      persistLatency.observe({}, seconds);
    },
    applied: (shard, entries) => applied.inc({ shard: String(shard) }, entries),
    leaderChanged: (shard) => leaderChanges.inc({ shard: String(shard) }),
    committed: (shard, seconds) => commitLatency.observe({ shard: String(shard) }, seconds),
  };
}

function startShardGauges(host: RaftHost, shardIds: number[]): void {
  const each = (fn: (shard: string, s: RaftStatus) => void) => {
    for (const id of shardIds) fn(String(id), host.status(id));
  };
  gauge({
    name: "kiseki_raft_term",
    help: "Current Raft term per shard",
    labelNames: ["shard"],
    collect: (set) => each((shard, s) => set({ shard }, s.term)),
  });
  gauge({
    name: "kiseki_raft_commit_index",
    help: "Commit index per shard",
    labelNames: ["shard"],
    collect: (set) => each((shard, s) => set({ shard }, s.commit)),
  });
  gauge({
    name: "kiseki_raft_leader",
    help: "Leader node id per shard as this node sees it (0: none)",
    labelNames: ["shard"],
    collect: (set) => each((shard, s) => set({ shard }, s.lead)),
  });
  gauge({
    name: "kiseki_raft_log_entries",
    help: "Entries in the shard's Raft log on this node (compaction keeps it bounded)",
    labelNames: ["shard"],
    collect: (set) => {
      for (const id of shardIds) {
        const b = host.logBounds(id);
        set({ shard: String(id) }, b.lastIndex - b.firstIndex + 1);
      }
    },
  });
  gauge({
    name: "kiseki_raft_snapshot_index",
    help: "Index of the shard's latest snapshot on this node (the log is truncated behind it)",
    labelNames: ["shard"],
    collect: (set) => {
      for (const id of shardIds) set({ shard: String(id) }, host.logBounds(id).snapshotIndex);
    },
  });
  gauge({
    name: "kiseki_raft_is_leader",
    help: "1 when this node leads the shard",
    labelNames: ["shard"],
    collect: (set) => each((shard, s) => set({ shard }, s.role === "leader" ? 1 : 0)),
  });
}
