package tools

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestToolSnapshots pins every tool's public contract (name, title,
// description, annotations, input and output schema). Rewrite the snapshots
// with UPDATE_TOOLSNAPS=true after an intended change; a missing snapshot fails.
func TestToolSnapshots(t *testing.T) {
	t.Parallel()
	update := os.Getenv("UPDATE_TOOLSNAPS") == "true"
	for _, tool := range All(nil, Config{}) {
		t.Run(tool.Tool.Name, func(t *testing.T) {
			t.Parallel()
			got, err := json.MarshalIndent(tool.Tool, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("__toolsnaps__", tool.Tool.Name+".snap")
			if update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("no snapshot for %s (%v); create it with UPDATE_TOOLSNAPS=true go test ./tools", tool.Tool.Name, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s changed its public schema; if intended, rerun with UPDATE_TOOLSNAPS=true.\n--- got\n%s\n--- want\n%s", tool.Tool.Name, got, want)
			}
		})
	}
}

// TestToolInventory checks what every tool must have: a unique name, a title,
// a description, every hint set, a strict object input schema without
// top-level combinators, and an object output schema.
func TestToolInventory(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, tool := range All(nil, Config{}) {
		tl := tool.Tool
		if seen[tl.Name] {
			t.Errorf("duplicate tool name %s", tl.Name)
		}
		seen[tl.Name] = true
		if tl.Title == "" && tl.Annotations.Title == "" {
			t.Errorf("%s: no title", tl.Name)
		}
		if len(tl.Description) < 80 {
			t.Errorf("%s: description too short to tell a model what it does, costs and needs", tl.Name)
		}
		a := tl.Annotations
		if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Errorf("%s: every hint must be set explicitly: %+v", tl.Name, a)
		}
		if a.ReadOnlyHint != nil && *a.ReadOnlyHint && a.DestructiveHint != nil && *a.DestructiveHint {
			t.Errorf("%s: read-only and destructive at once", tl.Name)
		}
		var in map[string]any
		if err := json.Unmarshal(tl.RawInputSchema, &in); err != nil {
			t.Fatalf("%s: input schema: %v", tl.Name, err)
		}
		if in["type"] != "object" {
			t.Errorf("%s: input schema type %v, want object", tl.Name, in["type"])
		}
		if in["additionalProperties"] != false {
			t.Errorf("%s: input schema must set additionalProperties false, got %v", tl.Name, in["additionalProperties"])
		}
		for _, k := range []string{"oneOf", "anyOf", "allOf", "not"} {
			if _, ok := in[k]; ok {
				t.Errorf("%s: top-level %s in input schema", tl.Name, k)
			}
		}
		var outSchema map[string]any
		if err := json.Unmarshal(tl.RawOutputSchema, &outSchema); err != nil || outSchema["type"] != "object" {
			t.Errorf("%s: output schema must be an object schema: %v %v", tl.Name, err, outSchema["type"])
		}
	}
	for _, want := range []string{"check_domain", "estimate_cost", "register_domain", "deploy_worker", "get_operation", "list_operations", "spend_status"} {
		if !seen[want] {
			t.Errorf("missing tool %s", want)
		}
	}
}
