// Sockets (netstat): TCP/UDP v4/v6 and unix sockets of every network namespace, from the kernel's hash tables
// (tcp_hashinfo, udp_table, per-netns unix tables) merged with fd-table sockets (owners); each row has its netns.
export {
  listSockets,
  ipv6,
  type SocketRow,
  type SocketsResult,
  type SocketsOptions,
  type SocketProto,
} from './netstat.js';
