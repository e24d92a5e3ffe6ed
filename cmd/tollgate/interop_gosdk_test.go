//go:build linux

package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestStdioBinaryWithGoSDKClient runs `tollgate serve --transport stdio` as
// a subprocess of the official go-sdk client (CommandTransport), at the
// newest protocol (2026-07-28) and at 2025-11-25 and 2025-06-18.
func TestStdioBinaryWithGoSDKClient(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"", "2025-11-25", "2025-06-18"} {
		name := "newest"
		if version != "" {
			name = version
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newInteropEnv(t)
			cmd := e.command("serve", "--transport", "stdio", "--sandbox")
			var errb bytes.Buffer
			cmd.Stderr = &errb
			defer func() {
				if t.Failed() {
					t.Logf("tollgate serve stderr:\n%s", errb.String())
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			c := sdk.NewClient(&sdk.Implementation{Name: "tollgate-interop-gosdk", Version: "1"}, nil)
			s, err := c.Connect(ctx, &sdk.CommandTransport{Command: cmd}, &sdk.ClientSessionOptions{ProtocolVersion: version})
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
				if st := cmd.ProcessState; st == nil || !st.Success() {
					t.Errorf("tollgate serve did not exit cleanly when its stdin closed: %v", st)
				}
			}()
			r := s.InitializeResult()
			if r == nil || r.ServerInfo == nil || r.ServerInfo.Name != "tollgate" {
				t.Fatalf("initialize result %+v", r)
			}
			if want := cmp.Or(version, "2026-07-28"); r.ProtocolVersion != want {
				t.Errorf("negotiated %q, want %s", r.ProtocolVersion, want)
			}
			var names []string
			for tl, err := range s.Tools(ctx, nil) {
				if err != nil {
					t.Fatal(err)
				}
				if tl.OutputSchema == nil {
					t.Errorf("tool %s has no output schema", tl.Name)
				}
				names = append(names, tl.Name)
			}
			slices.Sort(names)
			if !slices.Equal(names, interopWantTools) {
				t.Fatalf("tools %v", names)
			}
			call := func(name string, args map[string]any) map[string]any {
				t.Helper()
				res, err := s.CallTool(ctx, &sdk.CallToolParams{Name: name, Arguments: args})
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				raw, _ := json.Marshal(res.StructuredContent)
				var v map[string]any
				_ = json.Unmarshal(raw, &v)
				if res.IsError {
					t.Fatalf("%s: tool error %v", name, v)
				}
				return v
			}
			if v := call("check_domain", map[string]any{"domain": "gosdk-binary.dev"}); v["registrable"] != true {
				t.Errorf("check_domain %v", v)
			}
			if v := call("estimate_cost", map[string]any{"action": "register_domain", "params": map[string]any{"domain": "gosdk-binary.dev"}}); interopDig(v, "amount", "micros") != float64(12_180_000) {
				t.Errorf("estimate_cost %v", v)
			}
			if v := call("deploy_worker", map[string]any{"script_name": "web-gosdk", "module": interopModule, "compatibility_date": "2025-01-01", "environment": "preview", "reason": "a preview of the landing page from the go-sdk"}); v["status"] != "succeeded" {
				t.Errorf("deploy_worker %v", v)
			}
			if v := call("register_domain", map[string]any{"domain": "gosdk-binary.dev", "reason": "landing page for the go-sdk interop test"}); v["status"] != "awaiting_approval" {
				t.Errorf("register_domain %v", v)
			}
		})
	}
}
