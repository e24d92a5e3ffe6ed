package authz

import (
	"testing"

	"github.com/cerbos/cerbos-sdk-go/cerbos"
	enginev1 "github.com/cerbos/cerbos/api/genpb/cerbos/engine/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestResourceRulesUnchanged pins the protovalidate rules of
// cerbos.engine.v1.Resource that resourceShape is built from. If an SDK
// upgrade changes them, the memoised validation in buildResource may no
// longer be exact: extend resourceShape, then update this list.
func TestResourceRulesUnchanged(t *testing.T) {
	t.Parallel()
	want := map[string]string{
		"kind":           `{"[buf.validate.field]":{"required":true,"string":{"minLen":"1"}}}`,
		"policy_version": `{"[buf.validate.field]":{"string":{"pattern":"^[\\w]*$"}}}`,
		"id":             `{"[buf.validate.field]":{"required":true,"string":{"minLen":"1"}}}`,
		"attr":           `{"[buf.validate.field]":{"map":{"keys":{"string":{"minLen":"1"}}}}}`,
		"scope":          `{"[buf.validate.field]":{"string":{"pattern":"^(^$|\\.|[0-9a-zA-Z][\\w\\-]*(\\.\\w[\\w\\-]*)*)$"}}}`,
	}
	md := (&enginev1.Resource{}).ProtoReflect().Descriptor()
	if md.Options() != nil {
		if b, _ := protojson.Marshal(md.Options().(interface{ ProtoReflect() protoreflect.Message }).ProtoReflect().Interface()); string(b) != "{}" {
			t.Errorf("Resource now has message-level options %s: review resourceShape", b)
		}
	}
	fs := md.Fields()
	if fs.Len() != len(want) {
		t.Errorf("Resource has %d fields, want %d: review resourceShape", fs.Len(), len(want))
	}
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		b, err := protojson.MarshalOptions{Multiline: false}.Marshal(f.Options().(interface{ ProtoReflect() protoreflect.Message }).ProtoReflect().Interface())
		if err != nil {
			t.Fatal(err)
		}
		got := compactJSON(t, b)
		if w, ok := want[string(f.Name())]; !ok || got != compactJSON(t, []byte(w)) {
			t.Errorf("rules of Resource.%s are %s, want %s: review resourceShape", f.Name(), got, w)
		}
	}
}

// TestBuildResourceMatchesValidate checks that buildResource, memoised or
// not, accepts exactly what the SDK's full validation accepts, asking each
// case twice (the second answer may come from the memo), in an order where
// an invalid resource follows a valid one of the same kind.
func TestBuildResourceMatchesValidate(t *testing.T) {
	t.Parallel()
	cases := []Resource{
		{Kind: "domain", ID: "example.dev", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "domain", ID: "", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "domain", ID: "other.dev", Attr: map[string]any{"tld": "dev", "years": 3}},
		{Kind: "", ID: "x", Attr: map[string]any{"tld": "dev", "years": 1}},
		{Kind: "domain", ID: "x", Attr: map[string]any{"": "dev"}},
		{Kind: "domain", ID: "x", Attr: map[string]any{"tld": "dev", "bad": make(chan int)}},
		{Kind: "domain", ID: "x"},
		{Kind: "worker_script", ID: "w", Attr: map[string]any{"environment": "preview", "nested": map[string]any{"a": []any{1, "b"}}}},
	}
	for round := range 2 {
		for _, r := range cases {
			_, got := buildResource(r)
			want := cerbos.NewResource(r.Kind, r.ID).WithAttributes(r.Attr).Validate()
			if (got == nil) != (want == nil) {
				t.Errorf("round %d: buildResource(%s %q %v) = %v, full validation says %v", round, r.Kind, r.ID, r.Attr, got, want)
			}
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
