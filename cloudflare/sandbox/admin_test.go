package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFaultMethodFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		faults      Faults
		method      string
		path        string
		status      int
		tokenExists bool // after a DELETE of the token
	}{
		{"delete matched", Faults{ErrorRate: 1, Method: "DELETE", PathContains: "/tokens/"}, "DELETE", "tokens/ID", 500, true},
		{"lower-case method matches", Faults{ErrorRate: 1, Method: "delete"}, "DELETE", "tokens/ID", 500, true},
		{"get not matched", Faults{ErrorRate: 1, Method: "DELETE", PathContains: "/tokens/"}, "GET", "tokens/ID", 200, true},
		{"delete after effect", Faults{ErrorRate: 1, Method: "DELETE", FailAfterEffect: true}, "DELETE", "tokens/ID", 500, false},
		{"other method, path matches", Faults{ErrorRate: 1, Method: "POST", PathContains: "/tokens/"}, "DELETE", "tokens/ID", 200, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := newTestSandbox(t, Options{})
			_, id := mint(t, s, []string{pgRegistrarRead})
			s.SetFaults(tc.faults)
			r := call(t, s, tc.method, acctPath(strings.Replace(tc.path, "ID", id, 1)), s.ParentToken(), nil, "")
			if r.Status != tc.status {
				t.Fatalf("%s answered %d, want %d: %s", tc.method, r.Status, tc.status, r.Raw)
			}
			exists := false
			for _, tok := range s.LiveTokens() {
				exists = exists || tok.ID == id
			}
			if exists != tc.tokenExists {
				t.Fatalf("token exists %v, want %v", exists, tc.tokenExists)
			}
		})
	}
}

func TestFaultMethodRejected(t *testing.T) {
	t.Parallel()
	for _, m := range []string{"GET /x", "P0ST", "DELETE\n", strings.Repeat("A", 17)} {
		if _, err := New(Options{Faults: Faults{Method: m}}); err == nil || !strings.Contains(err.Error(), "not an HTTP method") {
			t.Errorf("method %q: %v", m, err)
		}
	}
}

// TestHangBeforeAndAfterEffect: a plain hang holds the request before it
// acts; with FailAfterEffect the change is made (and persisted) first.
func TestHangBeforeAndAfterEffect(t *testing.T) {
	t.Parallel()
	for _, after := range []bool{false, true} {
		t.Run(map[bool]string{false: "before", true: "after"}[after], func(t *testing.T) {
			t.Parallel()
			s, _ := newTestSandbox(t, Options{StateFile: t.TempDir() + "/state.json"})
			srvURL, client := serveTest(t, s)
			admin, _ := mint(t, s, []string{pgRegistrarAdmin})
			s.SetFaults(Faults{Hang: true, Method: "POST", PathContains: "/registrar/registrations", FailAfterEffect: after})

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "POST", srvURL+APIPrefix+acctPath("registrar/registrations"), strings.NewReader(`{"domain_name":"held.com"}`))
				req.Header.Set("Authorization", "Bearer "+admin)
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			waitFor(t, func() bool { return s.Hanging() == 1 })
			if got := hasDomain(s.Registrations(), "held.com"); got != after {
				t.Fatalf("registered while hanging: %v, want %v", got, after)
			}
			if after {
				// Persisted, so a restarted sandbox (or another process) sees it.
				again, err := New(Options{StateFile: s.stateFn})
				if err != nil || !hasDomain(again.Registrations(), "held.com") {
					t.Fatalf("registration not persisted before the hang: %v", err)
				}
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("client: %v, want its own cancellation", err)
			}
			waitFor(t, func() bool { return s.Hanging() == 0 })
		})
	}
}

// admin sends one request to the admin endpoint from remote.
func admin(t *testing.T, h http.Handler, method, path, remote, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, "http://sandbox.test"+path, strings.NewReader(body))
	req.RemoteAddr = remote
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var out map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %s", method, path, w.Body.Bytes())
	}
	return w.Code, out
}

func TestAdminEndpoint(t *testing.T) {
	t.Parallel()
	const local, remote = "127.0.0.1:40000", "203.0.113.9:40000"
	tests := []struct {
		name    string
		method  string
		path    string
		from    string
		body    string
		status  int
		errHas  string
		want    Faults
		changed bool
	}{
		{"read", "GET", AdminFaultsPath, local, "", 200, "", Faults{}, false},
		{"set hang", "POST", AdminFaultsPath, local, `{"hang":true,"method":"delete","path_contains":"/tokens/"}`, 200, "",
			Faults{Hang: true, Method: "DELETE", PathContains: "/tokens/"}, true},
		{"set rates and latency", "POST", AdminFaultsPath, "[::1]:40000", `{"latency":"25ms","error_rate":0.5,"rate_limit_rate":0.25,"fail_after_effect":true}`, 200, "",
			Faults{Latency: 25 * time.Millisecond, ErrorRate: 0.5, RateLimitRate: 0.25, FailAfterEffect: true}, true},
		{"clear", "POST", AdminFaultsPath, local, `{}`, 200, "", Faults{}, true},
		{"unknown field", "POST", AdminFaultsPath, local, `{"hang":true,"paths":"x"}`, 400, `unknown field "paths"`, Faults{}, false},
		{"rate too high", "POST", AdminFaultsPath, local, `{"error_rate":1.5}`, 400, "ErrorRate 1.5 is outside 0..1", Faults{}, false},
		{"rates sum above 1", "POST", AdminFaultsPath, local, `{"error_rate":0.7,"rate_limit_rate":0.7}`, 400, "above 1", Faults{}, false},
		{"bad method", "POST", AdminFaultsPath, local, `{"method":"GET /"}`, 400, "not an HTTP method", Faults{}, false},
		{"bad latency", "POST", AdminFaultsPath, local, `{"latency":"soon"}`, 400, "Go duration", Faults{}, false},
		{"latency too long", "POST", AdminFaultsPath, local, `{"latency":"2h"}`, 400, "allowed 0 to 10m0s", Faults{}, false},
		{"negative latency", "POST", AdminFaultsPath, local, `{"latency":"-1s"}`, 400, "allowed 0 to", Faults{}, false},
		{"trailing data", "POST", AdminFaultsPath, local, `{} {}`, 400, "trailing data", Faults{}, false},
		{"not an object", "POST", AdminFaultsPath, local, `null`, 400, "want a JSON object", Faults{}, false},
		{"wrong type", "POST", AdminFaultsPath, local, `{"hang":"yes"}`, 400, "hang", Faults{}, false},
		{"not loopback", "POST", AdminFaultsPath, remote, `{"hang":true}`, 403, "loopback clients only", Faults{}, false},
		{"not loopback read", "GET", AdminFaultsPath, remote, "", 403, "loopback clients only", Faults{}, false},
		{"wrong verb", "DELETE", AdminFaultsPath, local, "", 405, "use GET", Faults{}, false},
		{"unknown admin path", "GET", "/__sandbox/state", local, "", 404, "the only one is /__sandbox/faults", Faults{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := Faults{PathContains: "/untouched"}
			s, _ := newTestSandbox(t, Options{Admin: true, Faults: start})
			status, out := admin(t, s, tc.method, tc.path, tc.from, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, out)
			}
			if tc.errHas != "" {
				if msg, _ := out["error"].(string); !strings.Contains(msg, tc.errHas) {
					t.Fatalf("error %q does not say %q", msg, tc.errHas)
				}
			}
			want := start
			if tc.changed {
				want = tc.want
			}
			if got := s.Faults(); !reflect.DeepEqual(got, want) {
				t.Fatalf("faults %+v, want %+v", got, want)
			}
			if status == 200 {
				b, _ := json.Marshal(out["faults"])
				got, err := ParseFaults(b)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("answered faults %s (%v), want %+v", b, err, want)
				}
				if h, ok := out["hanging"].(float64); !ok || h != 0 {
					t.Fatalf("hanging %v", out["hanging"])
				}
			}
			if n := len(s.Requests()); n != 0 {
				t.Fatalf("admin calls logged as API requests: %d", n)
			}
		})
	}
}

func TestAdminEndpointOffByDefault(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	req := httptest.NewRequest("POST", "http://sandbox.test"+AdminFaultsPath, strings.NewReader(`{"hang":true}`))
	req.RemoteAddr = "127.0.0.1:40000"
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != http.StatusNotFound || !bytes.Contains(w.Body.Bytes(), []byte(`"code":7000`)) {
		t.Fatalf("admin path without Options.Admin: %d %s, want the API's 404 no-route", w.Code, w.Body.Bytes())
	}
	if s.Faults() != (Faults{}) {
		t.Fatal("faults changed without the admin endpoint")
	}
}

// TestAdminReportsHanging: the endpoint tells another process a request is
// held, the signal a crash test waits for before killing the client.
func TestAdminReportsHanging(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{Admin: true})
	srvURL, client := serveTest(t, s)
	if status, out := admin(t, s, "POST", AdminFaultsPath, "127.0.0.1:1", `{"hang":true,"path_contains":"/tokens/verify"}`); status != 200 {
		t.Fatalf("set: %d %v", status, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _, _ = get(ctx, client, srvURL+APIPrefix+acctPath("tokens/verify"), s.ParentToken()) }()
	waitFor(t, func() bool {
		_, out := admin(t, s, "GET", AdminFaultsPath, "127.0.0.1:1", "")
		return out["hanging"] == float64(1)
	})
	// Clearing the faults does not release a held request; the client must go.
	admin(t, s, "POST", AdminFaultsPath, "127.0.0.1:1", `{}`)
	if s.Hanging() != 1 {
		t.Fatal("clearing the faults released the held request")
	}
	cancel()
	waitFor(t, func() bool { return s.Hanging() == 0 })
}

func FuzzParseFaults(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"hang":true,"method":"DELETE","path_contains":"/tokens/"}`,
		`{"latency":"250ms","error_rate":0.5,"rate_limit_rate":0.5,"fail_after_effect":true}`,
		`{"latency":"1h"}`, `{"error_rate":-1}`, `{"method":"get"}`, `{"x":1}`, `null`, `[]`, `{} {}`, ``, `{"latency":"1e9h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := ParseFaults(body)
		if err != nil {
			if got != (Faults{}) {
				t.Fatalf("error %v with faults %+v", err, got)
			}
			return
		}
		if err := checkFaults(got); err != nil {
			t.Fatalf("accepted invalid faults %+v: %v", got, err)
		}
		if got.Latency > maxFaultLatency || got.Method != strings.ToUpper(got.Method) {
			t.Fatalf("accepted %+v", got)
		}
		// What the endpoint answers parses back to the same faults.
		b, err := json.Marshal(got.JSON())
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseFaults(b)
		if err != nil || again != got {
			t.Fatalf("round trip %+v -> %s -> %+v (%v)", got, b, again, err)
		}
	})
}
