// Types for stamp.js (a plain ES module served to the pages and imported by the unit tests).
export declare const COLS: number;
export declare const ROWS: number;
export declare const BITS: number;
export declare const READ_W: number;
export declare const READ_H: number;
export declare function crc8(bytes: number[]): number;
export declare function encodeBits(frameId: number, inputSeq: number): number[];
export declare function decodeBits(bits: number[]): { frameId: number; inputSeq: number } | null;
export declare function stampGeometry(w: number, h: number): { bw: number; bh: number; bandH: number };
export declare function drawStamp(ctx: unknown, w: number, h: number, frameId: number, inputSeq: number): void;
export declare function readStamp(rgba: ArrayLike<number>): { frameId: number; inputSeq: number } | null;
