package sandbox

import "strings"

// NamePrefix marks domains that belong to sandboxes. The reconciler only
// ever touches domains with this prefix.
const NamePrefix = "sbx-"

// NameFor derives a sandbox's domain name from the workflow ID that owns
// it, so a retried Create finds the VM it made the first time. suffix
// ("v1", "v2", …) names extra clones such as verification sandboxes.
func NameFor(owner, suffix string) string {
	var b strings.Builder
	b.WriteString(NamePrefix)
	for _, r := range strings.ToLower(owner) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if suffix != "" {
		b.WriteByte('-')
		b.WriteString(suffix)
	}
	name := b.String()
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}
