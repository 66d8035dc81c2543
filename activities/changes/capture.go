package changes

// Capture is the artifact the hypervisor worker stores after diffing a
// sandbox: the classified changes (with unified diffs attached) and the
// final content of every file the playbook must copy, keyed by path.
type Capture struct {
	Changes  *Changes          `json:"changes"`
	Contents map[string][]byte `json:"contents,omitempty"`
}
