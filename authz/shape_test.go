package authz

import (
	"testing"
	"time"

	"github.com/cerbos/cerbos-sdk-go/cerbos"
	enginev1 "github.com/cerbos/cerbos/api/genpb/cerbos/engine/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestRequestRulesUnchanged pins the protovalidate rules of
// cerbos.engine.v1.Principal and Resource, which buildPrincipal and
// buildResource apply by hand (the SDK's validator evaluates them with CEL,
// and brings a Cerbos Hub client along). If a Cerbos upgrade changes them,
// this fails: update the builders, then this list.
func TestRequestRulesUnchanged(t *testing.T) {
	t.Parallel()
	version := `{"[buf.validate.field]":{"string":{"pattern":"^[\\w]*$"}}}`
	scope := `{"[buf.validate.field]":{"string":{"pattern":"^(^$|\\.|[0-9a-zA-Z][\\w\\-]*(\\.\\w[\\w\\-]*)*)$"}}}`
	nonEmpty := `{"[buf.validate.field]":{"required":true,"string":{"minLen":"1"}}}`
	attr := `{"[buf.validate.field]":{"map":{"keys":{"string":{"minLen":"1"}}}}}`
	for _, c := range []struct {
		md   protoreflect.MessageDescriptor
		want map[string]string
	}{
		{(&enginev1.Principal{}).ProtoReflect().Descriptor(), map[string]string{
			"id": nonEmpty, "policy_version": version, "attr": attr, "scope": scope,
			"roles": `{"[buf.validate.field]":{"required":true,"repeated":{"minItems":"1","unique":true,"items":{"string":{"minLen":"1"}}}}}`,
		}},
		{(&enginev1.Resource{}).ProtoReflect().Descriptor(), map[string]string{
			"kind": nonEmpty, "policy_version": version, "id": nonEmpty, "attr": attr, "scope": scope,
		}},
	} {
		md := c.md
		if md.Options() != nil {
			if b, _ := protojson.Marshal(md.Options().(interface{ ProtoReflect() protoreflect.Message }).ProtoReflect().Interface()); string(b) != "{}" {
				t.Errorf("%s now has message-level options %s: review the builders", md.FullName(), b)
			}
		}
		fs := md.Fields()
		if fs.Len() != len(c.want) {
			t.Errorf("%s has %d fields, want %d: review the builders", md.FullName(), fs.Len(), len(c.want))
		}
		for i := 0; i < fs.Len(); i++ {
			f := fs.Get(i)
			b, err := protojson.MarshalOptions{Multiline: false}.Marshal(f.Options().(interface{ ProtoReflect() protoreflect.Message }).ProtoReflect().Interface())
			if err != nil {
				t.Fatal(err)
			}
			got := compactJSON(t, b)
			if w, ok := c.want[string(f.Name())]; !ok || got != compactJSON(t, []byte(w)) {
				t.Errorf("rules of %s.%s are %s, want %s: review the builders", md.FullName(), f.Name(), got, w)
			}
		}
	}
}

// TestBuildMatchesSDKValidation checks that buildPrincipal and buildResource
// accept exactly what the SDK's full validation (protovalidate) accepts, and
// send the same protobuf values.
func TestBuildMatchesSDKValidation(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 29, 4, 5, 6, 7, time.UTC)
	resources := []Resource{
		{Kind: "domain", ID: "example.dev", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "domain", ID: "", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "", ID: "x", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "domain", ID: "x", Attr: map[string]any{"": "dev"}},
		{Kind: "domain", ID: "x", Attr: map[string]any{"tld": "dev", "bad": make(chan int)}},
		{Kind: "domain", ID: "x"},
		{Kind: "worker_script", ID: "w", Attr: map[string]any{"environment": "preview", "at": at, "tags": []string{"a", "b"},
			"nested": map[string]any{"a": []any{1, "b", at}}, "raw": []byte("xy"), "n": int64(5), "f": 2.5, "ok": true, "none": nil}},
	}
	for _, r := range resources {
		got, err := buildResource(r)
		sdk := cerbos.NewResource(r.Kind, r.ID).WithAttributes(r.Attr)
		want := sdk.Validate()
		if (err == nil) != (want == nil) {
			t.Errorf("buildResource(%s %q %v) = %v, the SDK's validation says %v", r.Kind, r.ID, r.Attr, err, want)
		}
		if err == nil && !proto.Equal(got, sdk.Obj) {
			t.Errorf("buildResource(%s %q) sends %v, the SDK %v", r.Kind, r.ID, got, sdk.Obj)
		}
	}
	principals := []Principal{
		{ID: "web-bot", Roles: []string{"agent"}, Attr: map[string]any{"team": "web", "since": at}},
		{ID: "", Roles: []string{"agent"}},
		{ID: "web-bot"},
		{ID: "web-bot", Roles: []string{"agent", ""}},
		{ID: "web-bot", Roles: []string{"agent", "deployer", "agent"}},
		{ID: "web-bot", Roles: []string{"agent"}, Attr: map[string]any{"": "x"}},
	}
	for _, p := range principals {
		got, err := buildPrincipal(p)
		sdk := cerbos.NewPrincipal(p.ID, p.Roles...).WithAttributes(p.Attr)
		want := sdk.Validate()
		if (err == nil) != (want == nil) {
			t.Errorf("buildPrincipal(%q %v %v) = %v, the SDK's validation says %v", p.ID, p.Roles, p.Attr, err, want)
		}
		if err == nil && !proto.Equal(got, sdk.Obj) {
			t.Errorf("buildPrincipal(%q) sends %v, the SDK %v", p.ID, got, sdk.Obj)
		}
	}
}

func compactJSON(t *testing.T, b []byte) string {
	t.Helper()
	var out []byte
	inStr, esc := false, false
	for _, c := range b {
		switch {
		case esc:
			esc = false
		case c == '\\' && inStr:
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && (c == ' ' || c == '\n' || c == '\t'):
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
