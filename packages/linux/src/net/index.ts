// Sockets (netstat): TCP/UDP v4/v6 from the kernel hash tables merged with fd-table sockets (owners, unix).
export {
  listSockets,
  ipv6,
  type SocketRow,
  type SocketsResult,
  type SocketsOptions,
  type SocketProto,
} from './netstat.js';
