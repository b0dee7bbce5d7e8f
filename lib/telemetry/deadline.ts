// An SDK's shutdown bounded by the drain's cleanup margin: a hanging collector must not keep a
// draining worker past its deadline.

/** Waits for `work` (its failure ignored) or `timeoutMs`, whichever comes first. */
export async function within(work: Promise<unknown>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  await Promise.race([work.catch(() => {}), deadline]);
  clearTimeout(timer);
}
