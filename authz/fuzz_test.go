package authz

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// FuzzParseAddr: addresses come from flags and environment. Nothing may
// panic, and anything accepted must round-trip through String.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"localhost:3593", "unix:/tmp/cerbos.sock", "unix:///tmp/x.sock", "[::1]:3593", "10.0.0.1:443",
		"", "unix:", "unix:rel", "host", ":3593", "host:0", "host:99999", "https://h:1", "h:1 ", "unix:/a\x00b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		a, err := parseAddr(in)
		if err != nil {
			if !strings.Contains(err.Error(), "cerbos address") {
				t.Fatalf("error %q does not say what it is about", err)
			}
			return
		}
		b, err := parseAddr(a.String())
		if err != nil || b != a {
			t.Fatalf("parseAddr(%q) = %+v, but its String %q reparses to %+v, %v", in, a, a.String(), b, err)
		}
	})
}

// FuzzLogForwarder: the child's output is untrusted bytes. Any input, cut
// anywhere, must be forwarded without panicking, and lines stay capped.
func FuzzLogForwarder(f *testing.F) {
	f.Add([]byte(`{"log.level":"warn","log.logger":"cerbos.ruletable","message":"Error processing storage event, maintaining last valid state","error":"x/a.yaml:1:2: bad"}`+"\n"), 7)
	f.Add([]byte(`{"log.level":"error","log.logger":"cerbos.index","message":"Index build failed","missing":[{"importing_file":"a.yaml"}],"load_failures":[{"file":7}]}`+"\n"), 3)
	f.Add([]byte("cerbos: error: \xff\xfe\n\n\n{"), 1)
	f.Add([]byte(`{"log.level":5,"message":{"a":1},"log.logger":null}`+"\n"), 0)
	f.Fuzz(func(t *testing.T, data []byte, cut int) {
		rec := &logRecorder{}
		fw := &logForwarder{log: slog.New(rec), stderr: cut%2 == 0, now: time.Now, onPolicy: func(PolicyError) {}}
		if cut < 0 {
			cut = -cut
		}
		if len(data) > 0 {
			cut %= len(data) + 1
		} else {
			cut = 0
		}
		if n, err := fw.Write(data[:cut]); err != nil || n != cut {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if n, err := fw.Write(data[cut:]); err != nil || n != len(data)-cut {
			t.Fatalf("Write = %d, %v", n, err)
		}
		fw.flush()
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, r := range rec.records {
			if len(r.Message) > maxLogLine+200 {
				t.Fatalf("forwarded a %d-byte message", len(r.Message))
			}
		}
	})
}

// FuzzApproval: policy outputs are whatever a policy author wrote. The fold
// must never panic, and a requirement always comes with a count >= 1.
func FuzzApproval(f *testing.F) {
	for _, s := range []string{
		`{"require_approval": true, "why": "x"}`,
		`{"approvals_required": 2}`,
		`{"approvals_required": "2"}`,
		`{"approvals_required": 1e300, "require_approval": false}`,
		`{"require_approval": null}`,
		`"just a sentence"`,
		`[1, {"require_approval": true}]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var v any
		if json.Unmarshal([]byte(raw), &v) != nil {
			return
		}
		need := Decision{Allowed: true, Outputs: []Output{{Source: "s", Value: v}}}.Approval()
		if need.Required != (need.Approvals >= 1) {
			t.Fatalf("Approval() = %+v: required and count disagree", need)
		}
		if need.Approvals > maxApprovalsRequired {
			t.Fatalf("Approval() = %+v: count above %d", need, maxApprovalsRequired)
		}
	})
}
