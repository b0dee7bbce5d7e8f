// Python's `datetime.now().strftime('%Y-%m-%d %H:%M:%S')`, the one date-time text of the
// original: the prompts' `{now}` and the bot_config table's create_at/update_at.

const pad = (n: number) => String(n).padStart(2, '0');

/** Local time as `YYYY-MM-DD HH:MM:SS`. */
export function formatNow(d = new Date()): string {
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}
