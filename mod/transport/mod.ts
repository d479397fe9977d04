// Transport: moving bytes between nodes and to clients. The Raft transport (one TCP or
// mutual-TLS port per node, every shard multiplexed), the chunk fabric that moves fragments
// between nodes on that same port, and the gRPC plumbing of the data path.
export {
  checkPeerCertificate,
  CLUSTER_ID_SIZE_BYTES_MAX,
  CONNECTION_KINDS_MAX,
  FRAME_MESSAGE_COUNT_MAX,
  FRAME_PAYLOAD_SIZE_BYTES_MAX,
  RAFT_PROTOCOL_VERSION,
  RAFT_TRANSPORT_LIMITS_DEFAULT,
  readTlsMaterial,
  TcpRaftTransport,
} from "./raft_transport.ts";
export type {
  ConnectionAcceptor,
  RaftMessageHandler,
  RaftTransport,
  RaftTransportLimits,
  RaftTransportStats,
  TcpRaftTransportOptions,
  TlsMaterial,
  UnreachableHandler,
} from "./raft_transport.ts";
export {
  FABRIC_CHUNK_ID_SIZE_BYTES,
  FABRIC_FRAGMENT_SIZE_BYTES_LIMIT,
  FABRIC_FRAGMENT_SIZE_BYTES_MAX_DEFAULT,
  FABRIC_MAGIC,
  FABRIC_META_SIZE_BYTES_MAX,
  FABRIC_PROTOCOL_VERSION,
  FabricBadRequestError,
  FabricCancelledError,
  FabricError,
  FabricInternalError,
  FabricNoSpaceError,
  FabricNotFoundError,
  FabricTimeoutError,
  FabricUnavailableError,
} from "./fabric_wire.ts";
export type { FabricErrorCode, FabricOp } from "./fabric_wire.ts";
export { FABRIC_SERVER_LIMITS_DEFAULT, FabricServer } from "./fabric_server.ts";
export type {
  FabricServerLimits,
  FabricServerOptions,
  FabricServerStats,
  FragmentData,
  FragmentGet,
  FragmentHandler,
  FragmentPut,
  FragmentRef,
  FragmentStat,
} from "./fabric_server.ts";
export { FABRIC_CLIENT_LIMITS_DEFAULT, FabricClient, fetchFragments } from "./fabric_client.ts";
export type {
  FabricCallOptions,
  FabricClientLimits,
  FabricClientOptions,
  FabricClientStats,
  FetchedFragment,
  FetchFragmentsOptions,
  FragmentAddress,
  FragmentGetRequest,
  FragmentGetResult,
  FragmentPutRequest,
  FragmentSource,
  FragmentStatResult,
} from "./fabric_client.ts";
export {
  authenticateCaller,
  bindGrpcService,
  createGrpcClient,
  defineGrpcService,
  GRPC_CONCURRENT_STREAMS_MAX,
  GRPC_DEADLINE_MS_DEFAULT,
  GRPC_ERROR_MAPPERS_DEFAULT,
  GRPC_MESSAGE_SIZE_BYTES_MAX,
  GRPC_SHUTDOWN_GRACE_MS,
  GrpcStatus,
  GrpcStatusError,
  LEADER_ID_METADATA_KEY,
  LOG_SERVICE,
  permissionDenied,
  PROTO_ROOT_DEFAULT,
  startGrpcServer,
  toGrpcStatusError,
} from "./grpc.ts";
export type {
  AppendDeltaRequest,
  AppendDeltaResponse,
  CallerGate,
  Delta,
  DeltaOperation,
  GrpcCallContext,
  GrpcCallOptions,
  GrpcClient,
  GrpcClientOptions,
  GrpcErrorMapper,
  GrpcHandlers,
  GrpcMethods,
  GrpcServer,
  GrpcServerOptions,
  GrpcServiceBinding,
  GrpcServiceDefinition,
  GrpcStatusCode,
  GrpcStatusName,
  GrpcUnaryHandler,
  LogServiceMethods,
  MemberRole,
  PlaintextCallers,
  ReadDeltasRequest,
  ReadDeltasResponse,
  SetMaintenanceRequest,
  SetMaintenanceResponse,
  ShardHealthRequest,
  ShardHealthResponse,
  ShardMember,
  ShardState,
  StampedHlcTimestamp,
} from "./grpc.ts";
export {
  certificateIdentity,
  describeIdentity,
  SERVER_CERTIFICATE_KINDS,
} from "./peer_identity.ts";
export type { PeerCertificateNames, PeerIdentity, ServerCertificateKind } from "./peer_identity.ts";
export { CLIENT_SERVICE } from "./client_grpc.ts";
export type * from "./client_grpc.ts";
export {
  CLIENT_TRANSPORT_SERVER_LIMITS_DEFAULT,
  ClientTransportRefusal,
  ClientTransportServer,
} from "./client_transport_server.ts";
export type {
  ClientChunkHandler,
  ClientTransportServerLimits,
  ClientTransportServerOptions,
  ClientTransportSession,
} from "./client_transport_server.ts";
export {
  CLIENT_CONN_REQUEST_TIMEOUT_MS,
  CLIENT_CONN_REQUESTS_IN_FLIGHT_MAX,
  ClientTransportConnection,
  ClientTransportError,
} from "./client_transport_conn.ts";
export type {
  ClientTransportConnectOptions,
  ClientTransportErrorKind,
} from "./client_transport_conn.ts";
export * from "./client_wire.ts";
export {
  MESSAGE_ACCEPT_BACKLOG_MAX,
  MESSAGE_CONNECT_TIMEOUT_MS_DEFAULT,
  MESSAGE_FRAME_BYTES_MAX_DEFAULT,
  MESSAGE_RECEIVE_BUFFER_BYTES_MAX,
  TransportError,
} from "./ofi_port.ts";
export type {
  MessageConnection,
  MessageDialOptions,
  MessageListener,
  MessageTransport,
  TransportErrorCode,
} from "./ofi_port.ts";
export { TcpMessageTransport } from "./ofi_tcp.ts";
export type { TcpMessageTransportOptions } from "./ofi_tcp.ts";
export { FabricMessageTransport } from "./ofi_fabric.ts";
export type { FabricMessageTransportOptions } from "./ofi_fabric.ts";
export { chooseMessageTransport, detectTransports, selectMessageTransport } from "./ofi_select.ts";
export type { SelectTransportOptions, TransportChoice, TransportDetection } from "./ofi_select.ts";
