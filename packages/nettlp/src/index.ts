export * from './codec/tlp.js';
export { PcapWriter } from './pcap/writer.js';
export * from './adapter/index.js';
export * from './client/index.js';
