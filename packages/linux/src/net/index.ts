// Sockets (netstat): TCP/UDP v4/v6 and unix sockets of every network namespace, from the kernel's hash tables
// (tcp_hashinfo, udp_table, unix tables: global or per netns, as the kernel keeps them) merged with fd-table
// sockets (owners); each row has its netns, the result says which tables were walked.
export {
  listSockets,
  ipv6,
  type SocketRow,
  type SocketsResult,
  type SocketTables,
  type SocketsOptions,
  type SocketProto,
} from './netstat.js';
