package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PolicyReads is what a policy set reads from a check request, found by
// reading its files: for each resource kind, the resource attributes its
// conditions, outputs, variables and resource schema read, and whether a
// rule reads the clock; for every kind, the principal attributes any rule
// reads. The decision cache keys on exactly these, so a request that differs
// only in what no policy reads (a session id, the client's name) reuses a
// decision, and one that differs in anything a policy reads asks the PDP.
//
// The analysis is conservative: an expression it cannot follow (R.attr
// passed whole to a function, a computed attribute name, a file it cannot
// parse) counts as reading every attribute, or makes the set unusable.
type PolicyReads struct {
	kinds     map[string]kindReads
	shared    kindReads // files that apply to every kind: derived roles, variables, principal and role policies
	principal attrSet
}

// kindReads is what the policies of one resource kind read.
type kindReads struct {
	attrs attrSet
	clock bool
}

func (k *kindReads) merge(o kindReads) {
	k.attrs.merge(o.attrs)
	k.clock = k.clock || o.clock
}

// attrSet is a set of attribute names, or every attribute.
type attrSet struct {
	all   bool
	names map[string]struct{}
}

func (s *attrSet) add(name string) {
	if s.names == nil {
		s.names = map[string]struct{}{}
	}
	s.names[name] = struct{}{}
}

func (s *attrSet) merge(o attrSet) {
	s.all = s.all || o.all
	for n := range o.names {
		s.add(n)
	}
}

func (s attrSet) has(name string) bool {
	if s.all {
		return true
	}
	_, ok := s.names[name]
	return ok
}

func (s attrSet) sorted() []string {
	out := make([]string, 0, len(s.names))
	for n := range s.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ResourceAttrs returns the attributes the policies of kind read, sorted,
// or all=true when they may read any.
func (r *PolicyReads) ResourceAttrs(kind string) (names []string, all bool) {
	k := r.kind(kind)
	return k.attrs.sorted(), k.attrs.all
}

// PrincipalAttrs returns the principal attributes any policy reads, sorted,
// or all=true when they may read any.
func (r *PolicyReads) PrincipalAttrs() (names []string, all bool) {
	return r.principal.sorted(), r.principal.all
}

// ReadsClock reports whether a rule that applies to kind reads the clock
// (now(), timeSince()): such decisions change with time and are never cached.
func (r *PolicyReads) ReadsClock(kind string) bool { return r.kind(kind).clock }

func (r *PolicyReads) kind(kind string) kindReads {
	k := r.kinds[kind]
	var out kindReads
	out.merge(k)
	out.merge(r.shared)
	return out
}

// ReadPolicies analyses the policy folder fsys as Cerbos loads it: YAML and
// JSON files outside hidden folders, test suites (*_test.yaml) and testdata
// folders; resource schemas are read from _schemas/. A file that does not
// parse is an error: the PDP refuses it too and keeps serving something this
// analysis cannot see.
func ReadPolicies(fsys fs.FS) (*PolicyReads, error) {
	r := &PolicyReads{kinds: map[string]kindReads{}}
	var errs []error
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (skippedDir(d.Name()) || d.Name() == schemaDir) {
				return fs.SkipDir
			}
			return nil
		}
		if !policyFile(p) {
			return nil
		}
		raw, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		if err := r.addFile(fsys, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("read policies: %w", errors.Join(errs...))
	}
	return r, nil
}

// schemaDir is where Cerbos's disk store keeps JSON schemas.
const schemaDir = "_schemas"

// skippedDir reports folders Cerbos does not load: hidden ones and test
// fixtures.
func skippedDir(name string) bool {
	return strings.HasPrefix(name, ".") || name == "testdata"
}

// policyFile reports whether p is a file Cerbos would load as a policy.
func policyFile(p string) bool {
	base := path.Base(p)
	ext := path.Ext(base)
	if strings.HasPrefix(base, ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
		return false
	}
	return !strings.HasSuffix(strings.TrimSuffix(base, ext), "_test")
}

func (r *PolicyReads) addFile(fsys fs.FS, raw []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if doc == nil {
			continue
		}
		var reads kindReads
		scanValue(doc, &reads, &r.principal)
		rp, isResource := doc["resourcePolicy"].(map[string]any)
		kind, _ := rp["resource"].(string)
		if !isResource || kind == "" || strings.ContainsAny(kind, "*?[{") {
			r.shared.merge(reads)
			continue
		}
		if err := schemaReads(fsys, rp, &reads.attrs); err != nil {
			return err
		}
		k := r.kinds[kind]
		k.merge(reads)
		r.kinds[kind] = k
	}
}

// scanValue scans every string in a policy document except descriptions:
// conditions, outputs and variables are all strings, wherever they sit.
func scanValue(v any, reads *kindReads, principal *attrSet) {
	switch v := v.(type) {
	case string:
		scanExpr(v, reads, principal)
	case map[string]any:
		for k, e := range v {
			if k != "description" {
				scanValue(e, reads, principal)
			}
		}
	case []any:
		for _, e := range v {
			scanValue(e, reads, principal)
		}
	}
}

var (
	// subjectRE finds a reference to the request's resource or principal,
	// not preceded by a letter or a dot (so V.R or myR do not match).
	subjectRE = regexp.MustCompile(`(?:^|[^\w.])(R|P|request)\b`)
	// memberRE reads ".name" at the start of the rest of an expression.
	memberRE = regexp.MustCompile(`^\s*\.\s*([A-Za-z_]\w*)`)
	// attrNameRE reads ".name" or ["name"] after .attr; a following "("
	// makes it a macro call on the whole map (R.attr.all(...)).
	attrNameRE = regexp.MustCompile(`^\s*(?:\.\s*([A-Za-z_]\w*)\s*(\()?|\[\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\])`)
	// clockRE finds the CEL functions that read the clock.
	clockRE = regexp.MustCompile(`(?:^|[^\w.])now\s*\(|\btimeSince\b`)
)

// scanExpr records what one expression reads. Anything it cannot follow
// counts as reading every attribute of that subject.
func scanExpr(s string, reads *kindReads, principal *attrSet) {
	if clockRE.MatchString(s) {
		reads.clock = true
	}
	for _, m := range subjectRE.FindAllStringSubmatchIndex(s, -1) {
		root := s[m[2]:m[3]]
		rest := s[m[3]:]
		target := &reads.attrs
		if root == "P" {
			target = principal
		}
		if root == "request" {
			mm := memberRE.FindStringSubmatch(rest)
			switch {
			case mm == nil:
				continue // the word in prose ("request"): CEL can only use the request through its members
			case mm[1] == "resource":
			case mm[1] == "principal":
				target = principal
			default:
				continue // auxData and the like: not attributes
			}
			rest = rest[len(mm[0]):]
		}
		scanMember(rest, target, root == "P" || target == principal)
	}
}

// scanMember follows R / P: .attr.name records name; .id, .kind, .roles,
// .scope and .policyVersion are part of every cache key or fixed; anything
// else reads everything.
func scanMember(rest string, target *attrSet, principal bool) {
	mm := memberRE.FindStringSubmatch(rest)
	if mm == nil {
		target.all = true
		return
	}
	switch mm[1] {
	case "attr":
		am := attrNameRE.FindStringSubmatch(rest[len(mm[0]):])
		switch {
		case am == nil, am[2] != "":
			target.all = true
		case am[1] != "":
			target.add(am[1])
		case am[3] != "":
			target.add(am[3])
		default:
			target.add(am[4])
		}
	case "id", "scope", "policyVersion":
	case "kind":
		if principal {
			target.all = true
		}
	case "roles":
		if !principal {
			target.all = true
		}
	default:
		target.all = true
	}
}

// schemaReads adds the attributes a resource policy's schema constrains:
// with schema enforcement the PDP reads them too. A schema this cannot
// follow counts as reading every attribute.
func schemaReads(fsys fs.FS, rp map[string]any, attrs *attrSet) error {
	schemas, _ := rp["schemas"].(map[string]any)
	rs, _ := schemas["resourceSchema"].(map[string]any)
	if rs == nil {
		return nil
	}
	ref, _ := rs["ref"].(string)
	rel, ok := strings.CutPrefix(ref, "cerbos:///")
	if !ok || rel == "" {
		attrs.all = true
		return nil
	}
	raw, err := fs.ReadFile(fsys, path.Join(schemaDir, rel))
	if err != nil {
		return fmt.Errorf("resource schema %s: %w", ref, err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		return fmt.Errorf("resource schema %s: %w", ref, err)
	}
	for k, v := range schema {
		switch k {
		case "$schema", "$id", "title", "description", "type", "required":
		case "additionalProperties":
			if _, ok := v.(bool); !ok {
				attrs.all = true
			}
		case "properties":
			props, _ := v.(map[string]any)
			for name := range props {
				attrs.add(name)
			}
		default: // patternProperties, $ref, allOf, if/then, …
			attrs.all = true
		}
	}
	return nil
}
