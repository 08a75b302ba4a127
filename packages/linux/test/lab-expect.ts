/**
 * What a lab kernel must look like to the views, from its release: the views decide from BTF and
 * symbols (never from a version), and the lab tests check that they decided as the kernel's
 * history says — e.g. that 5.10's maps came from the `mm->mmap` list and 6.1+'s from the maple tree.
 */

/** `uname -r` ("5.10.0-32-amd64", "7.2.13+deb14-amd64") → [major, minor]. */
export function releaseVersion(release: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) throw new Error(`not a kernel release: '${release}'`);
  return [Number(m[1]), Number(m[2])];
}

/** The release is major.minor or later. */
export function releaseAtLeast(release: string, major: number, minor: number): boolean {
  const [a, b] = releaseVersion(release);
  return a > major || (a === major && b >= minor);
}
