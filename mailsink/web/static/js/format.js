/* How addresses, sizes and dates read on the page; pure functions of their arguments. */

/** An address's display name, else the address itself. */
export const shortAddr = (a) => (a ? a.Name || a.Address || '' : '');

/** "Name <address>", or the bare address when it has no name. */
export const fullAddr = (a) => (!a ? '' : a.Name ? `${a.Name} <${a.Address}>` : a.Address || '');

/** A list of addresses, comma-separated. */
export const addrList = (list) => (list || []).map(fullAddr).filter(Boolean).join(', ');

/** Bytes in decimal units, three significant figures at most ("1.2 MB"). */
export function humanSize(bytes) {
  let n = Number(bytes) || 0;
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let i = -1;
  do { n /= 1000; i += 1; } while (n >= 999.5 && i < units.length - 1);
  return `${n < 9.95 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

/** Received time: relative today, else a short local date. */
export function when(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    const secs = (now - d) / 1000;
    if (secs < 60) return 'just now';
    if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
    return `${Math.floor(secs / 3600)} h ago`;
  }
  const opts = d.getFullYear() === now.getFullYear()
    ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }
    : { year: 'numeric', month: 'short', day: 'numeric' };
  return d.toLocaleString(undefined, opts);
}

/** A full local date and time, for the message header. */
export function longDate(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso || '' : d.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'long' });
}

/** A local time of day to the millisecond ("14:03:07.215"), for transcripts. */
export function clockTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '';
  const two = (n) => String(n).padStart(2, '0');
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

/** The time between two instants, "12 ms", "2.35 s" or "3 min 5 s"; "" when either is missing. */
export function duration(fromIso, toIso) {
  const ms = new Date(toIso) - new Date(fromIso);
  if (Number.isNaN(ms) || ms < 0) return '';
  if (ms < 1000) return `${ms} ms`;
  const secs = ms / 1000;
  if (secs < 60) return `${secs < 10 ? secs.toFixed(2) : Math.round(secs)} s`;
  return `${Math.floor(secs / 60)} min ${Math.floor(secs % 60)} s`;
}
