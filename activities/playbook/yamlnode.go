package playbook

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The playbook is built as a yaml.Node tree so that key order, quoting and
// comments are fixed by the generator, not by map iteration.

var plainSafe = regexp.MustCompile(`^[A-Za-z/][A-Za-z0-9_./@+-]*$`)

// yaml11Special are plain scalars that YAML 1.1 (PyYAML, used by Ansible)
// would not read as strings.
var yaml11Special = map[string]bool{"y": true, "n": true, "yes": true, "no": true, "on": true, "off": true,
	"true": true, "false": true, "null": true}

// str is a string scalar. Strings that Jinja2 would template are tagged
// !unsafe, so a "{{" in a file name or cron job reaches the target verbatim.
func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if !plainSafe.MatchString(s) || yaml11Special[strings.ToLower(s)] {
		n.Style = yaml.DoubleQuotedStyle
	}
	if strings.Contains(s, "{{") || strings.Contains(s, "{%") || strings.Contains(s, "{#") {
		n.Tag = "!unsafe"
		n.Style = yaml.DoubleQuotedStyle
	}
	return n
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func integer(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

// mode renders permission bits as a quoted octal string ("0644"), the form
// ansible-lint's risky-octal rule and Ansible itself expect.
func mode(m uint32) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmt.Sprintf("%04o", m), Style: yaml.DoubleQuotedStyle}
}

func seq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: items}
}

func strs(ss []string) *yaml.Node {
	n := seq()
	for _, s := range ss {
		n.Content = append(n.Content, str(s))
	}
	return n
}

// mapping builds a mapping from key/value pairs. Values may be *yaml.Node,
// string, bool, int or []string; a nil *yaml.Node value drops the pair.
func mapping(kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(kv); i += 2 {
		var v *yaml.Node
		switch x := kv[i+1].(type) {
		case *yaml.Node:
			if x == nil {
				continue
			}
			v = x
		case string:
			v = str(x)
		case bool:
			v = boolean(x)
		case int:
			v = integer(x)
		case []string:
			v = strs(x)
		default:
			panic(fmt.Sprintf("playbook: unsupported yaml value %T", x))
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[i].(string)}, v)
	}
	return n
}

// set adds or replaces key in mapping n.
func set(n *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = v
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
