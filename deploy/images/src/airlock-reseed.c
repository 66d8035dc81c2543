/*
 * airlock-reseed FILE: mix FILE's bytes into the kernel's entropy pool
 * (a write to /dev/urandom), delete FILE, then make the kernel reseed its
 * CRNG from the pool at once (ioctl RNDRESEEDCRNG). A sandbox restored
 * from a template's memory image starts with the template's CRNG state;
 * without the reseed it would keep drawing from that shared state for up
 * to a minute. One small static program instead of cat, rm and perl:
 * every exec costs 50-500 ms right after a restore under TCG.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[4096];
	ssize_t n;
	int in, out, rc = 0;

	if (argc != 2) {
		fputs("usage: airlock-reseed FILE\n", stderr);
		return 2;
	}
	in = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		perror(argv[1]);
		return 1;
	}
	out = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (out < 0) {
		perror("/dev/urandom");
		return 1;
	}
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, n) != n) {
			perror("write /dev/urandom");
			return 1;
		}
	if (n < 0) {
		perror(argv[1]);
		return 1;
	}
	if (unlink(argv[1]) != 0) {
		perror(argv[1]);
		rc = 1;
	}
	/* ENODATA: the CRNG is not seeded yet; it reseeds when it is. */
	if (ioctl(out, RNDRESEEDCRNG) != 0 && errno != ENODATA) {
		perror("RNDRESEEDCRNG");
		rc = 1;
	}
	return rc;
}
