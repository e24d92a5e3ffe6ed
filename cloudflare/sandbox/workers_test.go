package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestScriptUploadValidation(t *testing.T) {
	t.Parallel()
	s, clk := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	mod := func(name string) upPart {
		return upPart{form: "files", file: name, ctype: "application/javascript+module", content: []byte(helloModule)}
	}
	meta := func(main, date string) map[string]string {
		return map[string]string{"main_module": main, "compatibility_date": date}
	}
	tomorrow := clk.now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)
	big := upPart{form: "files", file: "big.js", ctype: "application/javascript+module", content: bytes.Repeat([]byte("x"), maxScriptBytes+1)}
	tests := []struct {
		name   string
		script string
		meta   any
		parts  []upPart
		ctype  string
		status int
		code   int
	}{
		{"good", "hello", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js")}, "", 200, 0},
		{"two modules", "two", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js"), mod("lib.js")}, "", 200, 0},
		{"no metadata", "x", nil, []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"metadata not json", "x", "{nope", []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"no main module", "x", map[string]string{"compatibility_date": "2025-01-01"}, []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"main module not uploaded", "x", meta("index.js", "2025-01-01"), []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"main module not a module", "x", meta("worker.js", "2025-01-01"), []upPart{{form: "files", file: "worker.js", ctype: "text/plain", content: []byte("x")}}, "", 400, codeScriptInvalid},
		{"bad part type", "x", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js"), {form: "files", file: "a.exe", ctype: "application/x-msdownload", content: []byte("x")}}, "", 400, codeScriptInvalid},
		{"duplicate module", "x", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js"), mod("worker.js")}, "", 400, codeScriptInvalid},
		{"bad date", "x", meta("worker.js", "01/02/2025"), []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"impossible date", "x", meta("worker.js", "2025-02-30"), []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"future date", "x", meta("worker.js", tomorrow), []upPart{mod("worker.js")}, "", 400, codeScriptInvalid},
		{"too large", "x", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js"), big}, "", 400, codeScriptTooLarge},
		{"not multipart", "x", nil, nil, "application/json", 400, codeScriptInvalid},
		{"bad name", "Bad_Name", meta("worker.js", "2025-01-01"), []upPart{mod("worker.js")}, "", 400, codeScriptName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body, ct := uploadBody(t, tc.meta, tc.parts...)
			if tc.ctype != "" {
				ct = tc.ctype
			}
			r := call(t, s, "PUT", acctPath("workers/scripts/"+tc.script), tok, body, ct)
			if r.Status != tc.status || r.code() != tc.code {
				t.Fatalf("got %d code %d: %s", r.Status, r.code(), r.Raw)
			}
		})
	}
}

func TestScriptRoundTrip(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	lib := []byte("export const x = 1;")
	body, ct := uploadBody(t, map[string]string{"main_module": "index.js", "compatibility_date": "2025-01-01"},
		upPart{form: "files", file: "lib.js", ctype: "application/javascript+module", content: lib},
		upPart{form: "files", file: "index.js", ctype: "application/javascript+module", content: []byte(helloModule)})
	r := call(t, s, "PUT", acctPath("workers/scripts/round"), tok, body, ct)
	var up map[string]any
	r.result(t, &up)
	if r.Status != 200 || up["id"] != "round" || up["etag"] == "" || up["entry_point"] != "index.js" {
		t.Fatalf("upload: %d %s", r.Status, r.Raw)
	}
	etag := up["etag"]

	r = call(t, s, "GET", acctPath("workers/scripts/round"), tok, nil, "")
	if r.Status != 200 || r.Header.Get("cf-entrypoint") != "index.js" {
		t.Fatalf("get: %d %v", r.Status, r.Header)
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		t.Fatalf("content type %q", r.Header.Get("Content-Type"))
	}
	got := map[string][]byte{}
	mr := multipart.NewReader(bytes.NewReader(r.Raw), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(p)
		got[p.FileName()] = b
	}
	if string(got["index.js"]) != helloModule || string(got["lib.js"]) != string(lib) {
		t.Fatalf("parts %q", got)
	}

	sum := sha256.Sum256([]byte(helloModule))
	recs := s.Scripts()
	if len(recs) != 1 || recs[0].ModuleSHA256 != hex.EncodeToString(sum[:]) || recs[0].Etag != etag || recs[0].Size != len(lib)+len(helloModule) || recs[0].MainModule != "index.js" {
		t.Fatalf("Scripts() = %+v", recs)
	}

	r = call(t, s, "GET", acctPath("workers/scripts"), tok, nil, "")
	var list []map[string]any
	r.result(t, &list)
	if len(list) != 1 || list[0]["id"] != "round" || list[0]["etag"] != etag {
		t.Fatalf("list %s", r.Raw)
	}

	// A second, different upload changes the etag; the same content keeps it.
	body, ct = goodUpload(t)
	r = call(t, s, "PUT", acctPath("workers/scripts/round"), tok, body, ct)
	r.result(t, &up)
	if up["etag"] == etag {
		t.Fatal("new content, same etag")
	}
	again := call(t, s, "PUT", acctPath("workers/scripts/round"), tok, body, ct)
	var up2 map[string]any
	again.result(t, &up2)
	if up2["etag"] != up["etag"] {
		t.Fatal("same content, new etag")
	}

	r = call(t, s, "DELETE", acctPath("workers/scripts/round"), tok, nil, "")
	if r.Status != 200 {
		t.Fatalf("delete: %d %s", r.Status, r.Raw)
	}
	for _, m := range []string{"GET", "DELETE"} {
		r = call(t, s, m, acctPath("workers/scripts/round"), tok, nil, "")
		if r.Status != 404 || r.code() != codeWorkerNotFound || r.Env.Errors[0].Message != msgWorkerNotFound {
			t.Fatalf("%s after delete: %d %s", m, r.Status, r.Raw)
		}
	}
}

func TestWorkersSubdomain(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	reader, _ := mint(t, s, []string{pgWorkersRead})
	r := call(t, s, "GET", acctPath("workers/subdomain"), reader, nil, "")
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"subdomain":"`+workersSubdomain+`"`) {
		t.Fatalf("account subdomain: %s", r.Raw)
	}
	if r := call(t, s, "POST", acctPath("workers/scripts/nope/subdomain"), tok, []byte(`{"enabled":true}`), ""); r.Status != 404 {
		t.Fatalf("subdomain of a missing script: %d", r.Status)
	}
	body, ct := goodUpload(t)
	call(t, s, "PUT", acctPath("workers/scripts/sub"), tok, body, ct)
	if r := call(t, s, "POST", acctPath("workers/scripts/sub/subdomain"), reader, []byte(`{"enabled":true}`), ""); r.Status != 403 {
		t.Fatalf("read token enabled workers.dev: %d", r.Status)
	}
	if r := call(t, s, "POST", acctPath("workers/scripts/sub/subdomain"), tok, []byte(`{}`), ""); r.Status != 400 {
		t.Fatalf("missing enabled: %d", r.Status)
	}
	r = call(t, s, "POST", acctPath("workers/scripts/sub/subdomain"), tok, []byte(`{"enabled":true}`), "")
	if r.Status != 200 || !strings.Contains(string(r.Raw), `"enabled":true`) {
		t.Fatalf("enable: %d %s", r.Status, r.Raw)
	}
	r = call(t, s, "GET", acctPath("workers/scripts/sub/subdomain"), reader, nil, "")
	if !strings.Contains(string(r.Raw), `"enabled":true`) || !s.Scripts()[0].WorkersDev {
		t.Fatalf("get: %s", r.Raw)
	}
}

func TestWorkersPermissions(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	reader, _ := mint(t, s, []string{pgWorkersRead})
	registrar, _ := mint(t, s, []string{pgRegistrarAdmin})
	body, ct := goodUpload(t)
	if r := call(t, s, "PUT", acctPath("workers/scripts/p"), reader, body, ct); r.Status != http.StatusForbidden {
		t.Fatalf("read token uploaded: %d", r.Status)
	}
	if r := call(t, s, "GET", acctPath("workers/scripts"), registrar, nil, ""); r.Status != http.StatusForbidden {
		t.Fatalf("registrar token listed scripts: %d", r.Status)
	}
}
