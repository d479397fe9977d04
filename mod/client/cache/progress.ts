// The progress line of long client operations (staging): bytes, files, rate and ETA, as a
// bar on a terminal. Pure: the caller passes the clock's readings and decides where it goes.

export interface Progress {
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  /** Bytes moved in this run (resumed bytes are done but were not moved now). */
  bytesMoved: number;
  elapsedMs: number;
}

const BAR_CELLS = 24;
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${UNITS[unit]}`;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "--:--";
  const s = Math.max(0, Math.round(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = String(m).padStart(2, "0");
  const ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** `[#########...............]  37%  1.2 GiB/3.1 GiB  120/310 files  85.3 MiB/s  ETA 00:23` */
export function formatProgress(p: Progress): string {
  const fraction = p.bytesTotal > 0
    ? Math.min(1, p.bytesDone / p.bytesTotal)
    : p.filesTotal > 0
    ? Math.min(1, p.filesDone / p.filesTotal)
    : 1;
  const filled = Math.round(fraction * BAR_CELLS);
  const bar = "#".repeat(filled) + ".".repeat(BAR_CELLS - filled);
  const seconds = p.elapsedMs / 1000;
  const rate = seconds > 0 ? p.bytesMoved / seconds : 0;
  const left = p.bytesTotal - p.bytesDone;
  const eta = left <= 0 ? 0 : rate > 0 ? (left / rate) * 1000 : Infinity;
  const percent = String(Math.floor(fraction * 100)).padStart(3);
  return `[${bar}] ${percent}%  ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)}  ` +
    `${p.filesDone}/${p.filesTotal} files  ${formatBytes(Math.round(rate))}/s  ` +
    `ETA ${formatDuration(eta)}`;
}
