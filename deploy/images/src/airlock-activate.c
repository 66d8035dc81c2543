/*
 * airlock-activate [--clock SECONDS.NANOSECONDS] [--mac MAC] < RECORDS
 *
 * Gives a sandbox (or a production VM on its first boot) its identity, in
 * one exec. The hypervisor runs it over guest-exec with the identity files
 * on stdin, as records "MODE LEN PATH\n" each followed by LEN bytes:
 * /etc/machine-id, /etc/hostname, /etc/ssh/airlock/{host_ed25519_key,
 * host_ed25519_key-cert.pub,user_ca.pub}, /etc/ssh/airlock/principals/<user>
 * and /run/airlock-entropy, in any order. It then:
 *
 *  1. sets the clock (--clock: the host's time; after a restore from a
 *     template's memory image the guest clock is minutes behind, and
 *     certificate checks fail on a skewed clock), and the Ethernet NIC's
 *     address (--mac: a restored sandbox has the template's NIC, whose
 *     link the host keeps down until this sandbox's own MAC is set, so
 *     DHCP only ever sees that one);
 *  2. writes each file as root with its final mode before any content goes
 *     in (a private key is never readable by others, not even for a
 *     moment); new directories are 0700;
 *  3. mixes /run/airlock-entropy into the kernel's pool, deletes it and
 *     makes the CRNG reseed now (RNDRESEEDCRNG): a restored memory image
 *     repeats the template's random state;
 *  4. sets the hostname and the 127.0.1.1 line of /etc/hosts (sudo wants
 *     its own name resolvable);
 *  5. starts sshd if it is not running, and restarts systemd-networkd if an
 *     Ethernet link is left unmanaged or failed. A running sshd (a restored
 *     template) is left alone: OpenSSH 9.2 re-executes itself for every
 *     connection and reads the host key and certificate anew, and the CA
 *     and principals files are read at each login.
 *
 * Why C and not a shell script: right after a restore under TCG every exec
 * costs 50-500 ms (the translation cache is not part of the memory image);
 * the script version spent 1.3-1.9 s in sh, head, chmod, find and
 * systemctl. Static, so there is no dynamic loader to translate either.
 *
 * Exit status: 0 done, 1 a system call failed, 2 bad usage or records.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_RECORDS (4 << 20)
#define ENTROPY_PATH "/run/airlock-entropy"

static int fail(const char *what)
{
	fprintf(stderr, "airlock-activate: %s: %s\n", what, strerror(errno));
	return 1;
}

static int bad(const char *what)
{
	fprintf(stderr, "airlock-activate: %s\n", what);
	return 2;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static char *read_stdin(size_t *len)
{
	size_t cap = 16384, n = 0;
	char *buf = malloc(cap);
	if (!buf)
		return NULL;
	for (;;) {
		if (n == cap) {
			if (cap >= MAX_RECORDS) {
				errno = EFBIG;
				free(buf);
				return NULL;
			}
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
		}
		ssize_t r = read(0, buf + n, cap - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return NULL;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*len = n;
	return buf;
}

static int set_clock(const char *arg)
{
	char *end;
	errno = 0;
	long long sec = strtoll(arg, &end, 10);
	long nsec = 0;
	if (errno || end == arg || sec <= 0)
		return bad("--clock wants SECONDS.NANOSECONDS");
	if (*end == '.') {
		const char *p = end + 1;
		int digits = 0;
		for (; *p >= '0' && *p <= '9' && digits < 9; p++, digits++)
			nsec = nsec * 10 + (*p - '0');
		for (; digits < 9; digits++)
			nsec *= 10;
		end = (char *)p;
	}
	if (*end != '\0')
		return bad("--clock wants SECONDS.NANOSECONDS");
	struct timespec ts = { .tv_sec = (time_t)sec, .tv_nsec = nsec };
	if (clock_settime(CLOCK_REALTIME, &ts) != 0)
		return fail("clock_settime");
	return 0;
}

/* Sets the MAC of the one Ethernet link (en*) unless it has it already. */
static int set_mac(const char *arg)
{
	unsigned char mac[6];
	char tail;
	if (sscanf(arg, "%2hhx:%2hhx:%2hhx:%2hhx:%2hhx:%2hhx%c", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5], &tail) != 6 ||
	    strlen(arg) != 17)
		return bad("--mac wants xx:xx:xx:xx:xx:xx");
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return fail("/sys/class/net");
	char name[IFNAMSIZ] = "";
	int links = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "en", 2) != 0 || strlen(e->d_name) >= IFNAMSIZ)
			continue;
		if (links++ == 0)
			memcpy(name, e->d_name, strlen(e->d_name) + 1);
	}
	closedir(d);
	if (links != 1) {
		fprintf(stderr, "airlock-activate: --mac: want one Ethernet link, found %d\n", links);
		return 1;
	}
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	memcpy(ifr.ifr_name, name, sizeof ifr.ifr_name);
	int rc = 0;
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) {
		rc = fail(name);
	} else if (memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) != 0) {
		ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
		memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
		if (ioctl(fd, SIOCSIFHWADDR, &ifr) != 0)
			rc = fail("set MAC");
	}
	close(fd);
	return rc;
}

/* mkdir -p of path's parent directories (mode 0700 under umask 077). */
static int make_parents(const char *path)
{
	char dir[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof dir)
		return bad("path too long");
	memcpy(dir, path, n + 1);
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0700) != 0 && errno != EEXIST)
			return fail(dir);
		*p = '/';
	}
	return 0;
}

static int reseed(const char *data, size_t n)
{
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return fail("/dev/urandom");
	int rc = 0;
	if (write_all(fd, data, n) != 0)
		rc = fail("write /dev/urandom");
	/* ENODATA: the CRNG is not seeded yet; it reseeds when it is. */
	if (ioctl(fd, RNDRESEEDCRNG) != 0 && errno != ENODATA)
		rc = fail("RNDRESEEDCRNG");
	close(fd);
	return rc;
}

static int install(const char *path, mode_t mode, const char *data, size_t n)
{
	int rc = make_parents(path);
	if (rc)
		return rc;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(path);
	if (fchown(fd, 0, 0) != 0 || fchmod(fd, mode) != 0) {
		rc = fail(path);
	} else if (write_all(fd, data, n) != 0) {
		rc = fail(path);
	}
	if (close(fd) != 0 && rc == 0)
		rc = fail(path);
	return rc;
}

/* Records "MODE LEN PATH\n" + LEN bytes. */
static int install_records(char *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		char *nl = memchr(buf + off, '\n', len - off);
		if (!nl)
			return bad("bad record: no newline");
		*nl = '\0';
		char *line = buf + off, *end;
		errno = 0;
		unsigned long mode = strtoul(line, &end, 8);
		if (errno || end == line || *end != ' ' || mode > 07777)
			return bad("bad record: mode");
		char *lp = end + 1;
		unsigned long long n = strtoull(lp, &end, 10);
		if (errno || end == lp || *end != ' ')
			return bad("bad record: length");
		char *path = end + 1;
		if (path[0] != '/' || strstr(path, "/../") || strstr(path, "/./"))
			return bad("bad record: path must be absolute and clean");
		size_t data = (size_t)(nl + 1 - buf);
		if (n > len - data)
			return bad("bad record: truncated content");
		int rc;
		if (strcmp(path, ENTROPY_PATH) == 0) {
			rc = reseed(buf + data, (size_t)n);
			unlink(ENTROPY_PATH); /* left by an older driver, if any */
		} else {
			rc = install(path, (mode_t)mode, buf + data, (size_t)n);
		}
		if (rc)
			return rc;
		off = data + (size_t)n;
	}
	return 0;
}

/* The hostname from /etc/hostname, and its 127.0.1.1 line in /etc/hosts. */
static int set_hostname(void)
{
	char name[HOST_NAME_MAX + 2];
	FILE *f = fopen("/etc/hostname", "re");
	if (!f)
		return errno == ENOENT ? 0 : fail("/etc/hostname");
	if (!fgets(name, sizeof name, f)) {
		fclose(f);
		return 0;
	}
	fclose(f);
	name[strcspn(name, "\r\n")] = '\0';
	if (name[0] == '\0')
		return 0;
	if (sethostname(name, strlen(name)) != 0)
		return fail("sethostname");

	char want[HOST_NAME_MAX + 16];
	snprintf(want, sizeof want, "127.0.1.1\t%s", name);
	f = fopen("/etc/hosts", "re");
	if (!f)
		return fail("/etc/hosts");
	char *out = NULL;
	size_t outlen = 0;
	FILE *o = open_memstream(&out, &outlen);
	if (!o) {
		fclose(f);
		return fail("open_memstream");
	}
	char line[4096];
	int found = 0, changed = 0;
	while (fgets(line, sizeof line, f)) {
		size_t l = strcspn(line, "\n");
		int full = line[l] == '\n';
		line[l] = '\0';
		if (strncmp(line, "127.0.1.1", 9) == 0 && (line[9] == ' ' || line[9] == '\t')) {
			found = 1;
			if (strcmp(line, want) != 0) {
				snprintf(line, sizeof line, "%s", want);
				changed = 1;
			}
		}
		fputs(line, o);
		if (full)
			fputc('\n', o);
	}
	fclose(f);
	if (!found) {
		if (outlen > 0 && out[outlen - 1] != '\n')
			fputc('\n', o);
		fprintf(o, "%s\n", want);
		changed = 1;
	}
	if (fclose(o) != 0)
		return fail("open_memstream");
	int rc = 0;
	if (changed) {
		const char *tmp = "/etc/.hosts.airlock";
		rc = install(tmp, 0644, out, outlen);
		if (rc == 0 && rename(tmp, "/etc/hosts") != 0)
			rc = fail("rename /etc/hosts");
	}
	free(out);
	return rc;
}

/* Is sshd's listener running (its pid file names a live sshd)? */
static int sshd_running(void)
{
	char buf[64], path[64];
	FILE *f = fopen("/run/sshd.pid", "re");
	if (!f)
		return 0;
	int ok = fgets(buf, sizeof buf, f) != NULL;
	fclose(f);
	if (!ok)
		return 0;
	long pid = strtol(buf, NULL, 10);
	if (pid <= 0 || kill((pid_t)pid, 0) != 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/comm", pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	ok = fgets(buf, sizeof buf, f) != NULL && strncmp(buf, "sshd", 4) == 0;
	fclose(f);
	return ok;
}

/* Does networkd leave an Ethernet link unmanaged or failed? networkd
 * configures a hot-plugged NIC by itself; a link without a state file is
 * still pending, which is fine. */
static int networkd_needs_restart(void)
{
	DIR *d = opendir("/sys/class/net");
	if (!d)
		return 0;
	struct dirent *e;
	int need = 0;
	while (!need && (e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "en", 2) != 0)
			continue;
		char path[PATH_MAX], buf[256];
		snprintf(path, sizeof path, "/sys/class/net/%s/ifindex", e->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		int idx = 0;
		if (fscanf(f, "%d", &idx) != 1)
			idx = 0;
		fclose(f);
		if (idx <= 0)
			continue;
		snprintf(path, sizeof path, "/run/systemd/netif/links/%d", idx);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(buf, sizeof buf, f)) {
			if (strncmp(buf, "ADMIN_STATE=", 12) != 0)
				continue;
			const char *s = buf + 12;
			if (!strncmp(s, "unmanaged", 9) || !strncmp(s, "failed", 6) || !strncmp(s, "linger", 6))
				need = 1;
		}
		fclose(f);
	}
	closedir(d);
	return need;
}

int main(int argc, char **argv)
{
	int rc;
	umask(077);
	for (int i = 1; i < argc; i += 2) {
		if (i + 1 >= argc)
			return bad("usage: airlock-activate [--clock SECONDS.NANOSECONDS] [--mac MAC] < records");
		if (strcmp(argv[i], "--clock") == 0)
			rc = set_clock(argv[i + 1]);
		else if (strcmp(argv[i], "--mac") == 0)
			rc = set_mac(argv[i + 1]);
		else
			return bad("usage: airlock-activate [--clock SECONDS.NANOSECONDS] [--mac MAC] < records");
		if (rc)
			return rc;
	}
	size_t len = 0;
	char *buf = read_stdin(&len);
	if (!buf)
		return fail("read stdin");
	if ((rc = install_records(buf, len)))
		return rc;
	free(buf);
	if ((rc = set_hostname()))
		return rc;

	int net = networkd_needs_restart(), ssh = sshd_running();
	if (net) {
		/* Blocking on purpose: once this returns, sshd answers. */
		execl("/bin/systemctl", "systemctl", "restart", "systemd-networkd.service", "ssh.service", (char *)NULL);
		return fail("exec systemctl");
	}
	if (!ssh) {
		execl("/bin/systemctl", "systemctl", "start", "ssh.service", (char *)NULL);
		return fail("exec systemctl");
	}
	return 0;
}
