package tools

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSchemasAreValidJSONObjects(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range All() {
		require.False(t, seen[s.Name], "duplicate tool %s", s.Name)
		seen[s.Name] = true
		var schema struct {
			Type       string                     `json:"type"`
			Properties map[string]json.RawMessage `json:"properties"`
			Required   []string                   `json:"required"`
		}
		require.NoError(t, json.Unmarshal(s.Parameters, &schema), s.Name)
		require.Equal(t, "object", schema.Type, s.Name)
		for _, r := range schema.Required {
			require.Contains(t, schema.Properties, r, "%s: required %s has no property", s.Name, r)
		}
		require.NotEmpty(t, s.Description, s.Name)
		require.Contains(t, []string{RunsOnHost, RunsInWorkflow, RunsWithHuman}, s.RunsOn, s.Name)
	}
	for _, name := range []string{ListSandboxes, CreateSandbox, DestroySandbox, StartSandbox, StopSandbox, RunCommand, ReadFile, EditFile,
		CreateSnapshot, RestoreSnapshot, Diff, CreatePlaybook, AddPlaybookTask, ListPlaybooks, GetPlaybook, RequestApproval, RequestEgress, Finish} {
		require.True(t, seen[name], "tool %s missing", name)
	}
}

func TestReadOnlyOffersOnlyToolsThatChangeNothing(t *testing.T) {
	ro := Names(Offered(true))
	require.Equal(t, []string{Diff, Finish, GetPlaybook, ListPlaybooks, ListSandboxes, ReadFile, RequestApproval}, ro)
	for _, name := range []string{RunCommand, EditFile, CreateSnapshot, RestoreSnapshot, RequestEgress, CreateSandbox, DestroySandbox, StopSandbox, StartSandbox, CreatePlaybook, AddPlaybookTask} {
		require.False(t, IsReadOnly(name), name)
	}
	require.False(t, IsReadOnly("no_such_tool"))
	require.Len(t, Offered(false), len(All()))
}

func TestParseStrict(t *testing.T) {
	v, err := Parse(RunCommand, `{"command":"uname -a"}`)
	require.NoError(t, err)
	require.Equal(t, "uname -a", v.(*RunCommandArgs).Command)

	v, err = Parse(ListSandboxes, ``)
	require.NoError(t, err)
	require.IsType(t, &NoArgs{}, v)

	cases := map[string]struct{ tool, args, want string }{
		"not json":        {RunCommand, `{"command": "ls"`, "not valid JSON"},
		"plain text":      {RunCommand, `ls -la`, "not valid JSON"},
		"unknown field":   {RunCommand, `{"cmd":"ls"}`, `unknown field "cmd"`},
		"wrong type":      {RunCommand, `{"command":42}`, `"command" must be a string`},
		"missing":         {RunCommand, `{}`, `"command" is required`},
		"relative path":   {ReadFile, `{"path":"etc/hosts"}`, "absolute"},
		"bad op":          {EditFile, `{"path":"/etc/x","op":"delete"}`, `"op" must be`},
		"replace no old":  {EditFile, `{"path":"/etc/x","op":"replace","new_text":"a"}`, "old_text"},
		"write no body":   {EditFile, `{"path":"/etc/x","op":"write"}`, `needs "content"`},
		"bad mode":        {EditFile, `{"path":"/etc/x","op":"write","content":"","mode":"rwx"}`, "octal"},
		"bad snapshot":    {CreateSnapshot, `{"name":"../x"}`, `"name"`},
		"one option":      {RequestApproval, `{"question":"ok?","options":["yes"]}`, "2 to 8"},
		"no destinations": {RequestEgress, `{"reason":"apt"}`, "destinations"},
		"empty summary":   {Finish, `{"summary":"  "}`, "summary"},
		"args not object": {AddPlaybookTask, `{"playbook":"p","name":"n","module":"m","args":[1]}`, "object"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(tc.tool, tc.args)
			var ae *ArgError
			require.True(t, errors.As(err, &ae), "want ArgError, got %v", err)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	_, err = Parse("format_disk", `{}`)
	require.ErrorIs(t, err, ErrUnknownTool)
}

func TestDenyList(t *testing.T) {
	denied := map[string]string{
		"rm -rf /":                                  "rm-root",
		"rm -rf /*":                                 "rm-root",
		"sudo rm -rf / ":                            "rm-root",
		"cd /tmp && rm -fr /etc":                    "rm-root",
		"rm -r -f /usr/":                            "rm-root",
		"rm --recursive --force /var":               "rm-root",
		"rm -rf --no-preserve-root /x":              "rm-no-preserve-root",
		"find / -name '*.log' -delete":              "find-delete-root",
		"mkfs.ext4 /dev/vdb":                        "mkfs",
		"mkfs -t ext4 /dev/vda":                     "mkfs",
		"wipefs -a /dev/vda":                        "mkfs",
		"dd if=/dev/zero of=/dev/vda bs=1M":         "dd-device",
		"dd if=/dev/urandom of=/dev/sda":            "dd-device",
		"cat /tmp/img > /dev/vda":                   "redirect-device",
		"shutdown -h now":                           "power",
		"reboot":                                    "power",
		"echo ok; poweroff":                         "power",
		"systemctl reboot":                          "power",
		"init 0":                                    "power",
		":(){ :|:& };:":                             "fork-bomb",
		"bomb() { bomb | bomb & }; bomb":            "fork-bomb",
		"chmod -R 777 /":                            "recursive-perms-root",
		"chown -R nobody /etc":                      "recursive-perms-root",
		"systemctl stop ssh":                        "ssh-lockout",
		"systemctl disable --now ssh.service":       "ssh-lockout",
		"pkill sshd":                                "ssh-lockout",
		"apt-get purge -y openssh-server":           "ssh-lockout",
		"rm /etc/ssh/airlock/user_ca.pub":           "airlock-identity",
		"ip link set enp1s0 down":                   "network-down",
		"iptables -P INPUT DROP":                    "network-down",
		"echo c > /proc/sysrq-trigger":              "sysrq",
		"for i in 1; do\n  reboot\ndone":            "power",
		"x=$(reboot)":                               "power",
		"apt-get install -y nginx && rm -rf /boot/": "rm-root",
	}
	for script, rule := range denied {
		err := CheckCommand(script)
		var de *DeniedError
		require.True(t, errors.As(err, &de), "%q must be refused", script)
		require.Equal(t, rule, de.Rule, script)
		require.Contains(t, err.Error(), "deny-list")
	}
	allowed := []string{
		"rm -rf /etc/nginx/sites-enabled/default",
		"rm -rf /var/www/html/*",
		"rm -f /run/nginx.pid",
		"rm -rf /tmp/build",
		"find /var/log/nginx -name '*.gz' -delete",
		"dd if=/dev/zero of=/tmp/file bs=1M count=1",
		"dd if=/dev/zero of=/dev/null count=1",
		"echo hi > /dev/null",
		"systemctl restart nginx",
		"systemctl status ssh",
		"systemctl reload ssh",
		"apt-get install -y nginx",
		"chmod -R 755 /var/www/status",
		"chown -R www-data:www-data /var/www",
		"grep -r shutdown /etc/init.d || true",
		"echo 'do not reboot' > /etc/motd",
		"journalctl -u nginx --no-pager | tail",
		"f() { echo a | cat & }; f",
		"ip addr show",
		"iptables -L",
		"cat /etc/ssh/sshd_config",
	}
	for _, script := range allowed {
		require.NoError(t, CheckCommand(script), script)
	}
}

func TestApplyEdit(t *testing.T) {
	s := func(v string) *string { return &v }
	out, err := ApplyEdit(EditFileArgs{Path: "/etc/x", Op: "replace", OldText: "listen 80;", NewText: s("listen 8080;")}, "server {\n  listen 80;\n}\n", true)
	require.NoError(t, err)
	require.Equal(t, "server {\n  listen 8080;\n}\n", out)

	_, err = ApplyEdit(EditFileArgs{Path: "/etc/x", Op: "replace", OldText: "a", NewText: s("b")}, "a a", true)
	require.ErrorContains(t, err, "occurs 2 times")
	_, err = ApplyEdit(EditFileArgs{Path: "/etc/x", Op: "replace", OldText: "zzz", NewText: s("b")}, "a", true)
	require.ErrorContains(t, err, "not found")
	_, err = ApplyEdit(EditFileArgs{Path: "/etc/x", Op: "replace", OldText: "a", NewText: s("b")}, "", false)
	require.ErrorContains(t, err, "does not exist")

	out, err = ApplyEdit(EditFileArgs{Op: "append", Content: s("b\n")}, "a", true)
	require.NoError(t, err)
	require.Equal(t, "a\nb\n", out)
	out, err = ApplyEdit(EditFileArgs{Op: "append", Content: s("b\n")}, "", false)
	require.NoError(t, err)
	require.Equal(t, "b\n", out)
	out, err = ApplyEdit(EditFileArgs{Op: "write", Content: s("new")}, "old", true)
	require.NoError(t, err)
	require.Equal(t, "new", out)
}
