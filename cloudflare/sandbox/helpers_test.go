package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a settable sandbox clock.
type testClock struct{ off atomic.Int64 }

func (c *testClock) now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) advance(d time.Duration) { c.off.Add(int64(d)) }

func newTestSandbox(t testing.TB, opts Options) (*Sandbox, *testClock) {
	t.Helper()
	clk := &testClock{}
	if opts.Clock == nil {
		opts.Clock = clk.now
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s, clk
}

// reply is a decoded answer.
type reply struct {
	Status int
	Header http.Header
	Raw    []byte
	Env    struct {
		Success    bool            `json:"success"`
		Errors     []apiError      `json:"errors"`
		Messages   []apiMessage    `json:"messages"`
		Result     json.RawMessage `json:"result"`
		ResultInfo map[string]any  `json:"result_info"`
	}
}

func (r reply) code() int {
	if len(r.Env.Errors) == 0 {
		return 0
	}
	return r.Env.Errors[0].Code
}

func (r reply) result(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Env.Result, v); err != nil {
		t.Fatalf("decode result %s: %v", r.Env.Result, err)
	}
}

// call sends one request straight to the handler (no network). The remote
// address is loopback, as it is over a real loopback listener.
func call(t testing.TB, s *Sandbox, method, path, token string, body []byte, contentType string) reply {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return callAuth(t, s, method, path, auth, body, contentType)
}

// callAuth is call with a raw Authorization header ("" for none).
func callAuth(t testing.TB, s http.Handler, method, path, auth string, body []byte, contentType string) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://sandbox.test"+APIPrefix+path, rd)
	req.RemoteAddr = "127.0.0.1:40000"
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	out := reply{Status: w.Code, Header: w.Header(), Raw: w.Body.Bytes()}
	if strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(out.Raw, &out.Env); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %v\n%s", method, path, err, out.Raw)
		}
	}
	return out
}

// callVia is call through any handler wrapping the sandbox.
func callVia(t testing.TB, h http.Handler, method, path, token string, body []byte) reply {
	t.Helper()
	return callAuth(t, h, method, path, "Bearer "+token, body, "")
}

func jsonBody(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func acctPath(p string) string { return "accounts/" + accountID + "/" + p }

// mintOpts tweak a token-create body.
type mintOpts func(map[string]any)

// mint creates a token holding groups via the parent token and returns its
// value and id.
func mint(t testing.TB, s *Sandbox, groups []string, opts ...mintOpts) (string, string) {
	t.Helper()
	var pgs []map[string]string
	for _, g := range groups {
		pgs = append(pgs, map[string]string{"id": permissionGroupID(g)})
	}
	body := map[string]any{
		"name": fmt.Sprintf("test:%d-groups", len(groups)),
		"policies": []map[string]any{{
			"effect": "allow", "permission_groups": pgs, "resources": map[string]string{accountResource: "*"},
		}},
	}
	for _, o := range opts {
		o(body)
	}
	r := call(t, s, "POST", acctPath("tokens"), s.ParentToken(), jsonBody(t, body), "")
	if r.Status != http.StatusOK {
		t.Fatalf("mint %v: %d %s", groups, r.Status, r.Raw)
	}
	var tok struct{ ID, Value string }
	r.result(t, &tok)
	return tok.Value, tok.ID
}

var allGroups = []string{pgRegistrarRead, pgRegistrarAdmin, pgWorkersRead, pgWorkersWrite, pgTokensRead, pgTokensWrite}

// upload builds a multipart Worker upload.
type upPart struct {
	form, file, ctype string
	content           []byte
}

func uploadBody(t testing.TB, meta any, parts ...upPart) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if meta != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="metadata"`)
		h.Set("Content-Type", "application/json")
		w, _ := mw.CreatePart(h)
		if s, ok := meta.(string); ok {
			_, _ = w.Write([]byte(s))
		} else {
			_, _ = w.Write(jsonBody(t, meta))
		}
	}
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		if p.file != "" {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p.form, p.file))
		} else {
			h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q`, p.form))
		}
		if p.ctype != "" {
			h.Set("Content-Type", p.ctype)
		}
		w, _ := mw.CreatePart(h)
		_, _ = w.Write(p.content)
	}
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

const helloModule = "export default { async fetch() { return new Response('hello') } };"

func goodUpload(t testing.TB) ([]byte, string) {
	return uploadBody(t, map[string]string{"main_module": "worker.js", "compatibility_date": "2025-01-01"},
		upPart{form: "files", file: "worker.js", ctype: "application/javascript+module", content: []byte(helloModule)})
}
