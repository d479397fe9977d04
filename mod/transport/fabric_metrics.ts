// The chunk fabric's metrics, shared by its client and server sides. Peer labels are node
// ids of the cluster (bounded by its membership), set only after a handshake succeeded.

import { counter, gauge, histogram } from "../obs/mod.ts";

export const fabricMetrics = {
  bytesSent: counter<"peer" | "side">({
    name: "kiseki_fabric_bytes_sent_total",
    help: "Chunk fabric bytes written (handshakes and frames), by peer node and side " +
      "(client: connections this node dialled; server: connections it accepted).",
    labelNames: ["peer", "side"],
  }),
  bytesReceived: counter<"peer" | "side">({
    name: "kiseki_fabric_bytes_received_total",
    help: "Chunk fabric bytes received (handshakes and frames), by peer node and side.",
    labelNames: ["peer", "side"],
  }),
  requests: counter<"side" | "op" | "outcome">({
    name: "kiseki_fabric_requests_total",
    help: "Chunk fabric requests finished, by side, op (put, get, stat, delete) and outcome " +
      "(ok, not_found, no_space, bad_request, unavailable, internal, timeout, cancelled).",
    labelNames: ["side", "op", "outcome"],
  }),
  latency: histogram<"side" | "op">({
    name: "kiseki_fabric_request_latency_seconds",
    help: "Chunk fabric request latency: client from admission to answer, server in the handler.",
    labelNames: ["side", "op"],
  }),
  inflightBytes: gauge<"peer">({
    name: "kiseki_fabric_inflight_bytes",
    help: "Fragment bytes of requests in flight to a peer (bounded by inflightBytesPerPeerMax).",
    labelNames: ["peer"],
  }),
  serverHeldBytes: gauge({
    name: "kiseki_fabric_server_held_bytes",
    help: "Request bodies and responses the fabric server holds (bounded by serverBytesMax).",
  }),
  waits: counter<"peer">({
    name: "kiseki_fabric_backpressure_waits_total",
    help: "Requests that waited for in-flight room to a peer.",
    labelNames: ["peer"],
  }),
  connections: gauge<"side">({
    name: "kiseki_fabric_connections",
    help: "Chunk fabric connections past their handshake, by side.",
    labelNames: ["side"],
  }),
  reconnects: counter<"peer">({
    name: "kiseki_fabric_reconnects_total",
    help: "Chunk fabric connection attempts to a peer after a failed attempt or a lost connection.",
    labelNames: ["peer"],
  }),
  protocolErrors: counter<"side" | "reason">({
    name: "kiseki_fabric_protocol_errors_total",
    help: "Chunk fabric connections closed for breaking the protocol or failing the handshake.",
    labelNames: ["side", "reason"],
  }),
};
