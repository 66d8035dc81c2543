// Package changes captures what changed on a machine: manifests taken
// inside the guest by one streamed bash script, a classified diff between
// two manifests, unified diffs of text files, and the residual comparison
// used to verify a playbook on a fresh clone. It is plain Go; the Temporal
// and SSH wiring live elsewhere.
//
// # Manifest
//
// ManifestScript returns a script that the caller pipes to `bash -s` as
// root; ParseManifest reads its stdout. The stream is NUL-framed tagged
// records (see the header of manifest.sh), so any byte may occur in a file
// name. Files come from one `find -P -xdev -printf` walk that prunes the
// exclusion list (DefaultExcludes), never follows symlinks, and never opens
// non-regular files or files above the hash limit (HashLarge). Unreadable
// files become HashError entries, never an abort. The stream ends with a
// trailer; a stream without it is ErrTruncated.
//
// Incremental hashing: the caller uploads Manifest.BaselineIndex of an
// earlier manifest to BaselineIndexPath. The index is keyed by inode, size,
// mtime and ctime (ns), and the script joins it against the walk with
// sort/join, so only new or changed files are read (Stats.Hashed vs
// Stats.Reused). ctime cannot be set from user space, so a file rewritten and
// touched back is still re-hashed.
//
// # Package folding
//
// The script emits the dpkg file list (/var/lib/dpkg/info/<pkg>.list) of
// every package whose list file it hashed in this run: all packages in the
// first manifest, only installed or upgraded ones in a later manifest (their
// list file changed). Manifest.Inherit carries unchanged lists forward. Diff
// folds under a package:
//   - added/modified paths in the after-list of a package installed or
//     upgraded in the same change, if they are directories or symlinks, or
//     regular files whose mtime is not newer than the package's .list file
//     (dpkg stamps unpacked files with the .deb's mtime and writes the list
//     after unpacking, so a conffile edited afterwards stays visible);
//   - removed paths in the before-list of a package removed or upgraded.
//
// dpkg/apt/debconf databases are folded as "package-state" when any package
// changed. Account databases fold into the users section, user crontabs
// into the cron section, systemd .wants/.requires and mask links into the
// services section.
package changes
