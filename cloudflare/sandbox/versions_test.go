package sandbox

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func versionUpload(t testing.TB, src, tag string) ([]byte, string) {
	t.Helper()
	meta := map[string]any{"main_module": "worker.js", "compatibility_date": "2025-01-01"}
	if tag != "" {
		meta["annotations"] = map[string]string{"workers/tag": tag, "workers/message": "rollout of " + tag}
	}
	return uploadBody(t, meta, upPart{form: "files", file: "worker.js", ctype: "application/javascript+module", content: []byte(src)})
}

func deployBody(shares ...any) []byte {
	var vs []string
	for i := 0; i+1 < len(shares); i += 2 {
		vs = append(vs, fmt.Sprintf(`{"version_id":%q,"percentage":%v}`, shares[i], shares[i+1]))
	}
	return []byte(`{"strategy":"percentage","versions":[` + strings.Join(vs, ",") + `],"annotations":{"workers/message":"step"}}`)
}

// TestVersionsAndDeployments walks a gradual rollout: a new version is
// uploaded without serving, traffic moves 10 / 50 / 100 %, the script's
// content follows the version with the larger share, and a rollback is one
// more deployment.
func TestVersionsAndDeployments(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	uploadScript(t, s, "roll")
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	old := s.Scripts()[0]
	v1 := old.VersionID
	if len(old.Traffic) != 1 || old.Traffic[0] != (TrafficShare{VersionID: v1, Percentage: 100}) {
		t.Fatalf("a script upload is not deployed at 100 %%: %+v", old)
	}

	body, ct := versionUpload(t, helloModule+"// v2", "op_roll")
	r := call(t, s, "POST", acctPath("workers/scripts/roll/versions"), tok, body, ct)
	var v2 struct {
		ID          string
		Number      int
		Annotations map[string]string
	}
	r.result(t, &v2)
	if r.Status != 200 || v2.Number != 2 || v2.Annotations["workers/tag"] != "op_roll" || v2.Annotations["workers/triggered_by"] != "version_upload" {
		t.Fatalf("upload version: %d %s", r.Status, r.Raw)
	}
	if got := s.Scripts()[0]; got.Etag != old.Etag || got.VersionID != v1 {
		t.Fatalf("an uploaded version changed what serves: %+v", got)
	}

	content := func() string {
		r := call(t, s, "GET", acctPath("workers/scripts/roll"), tok, nil, "")
		return string(r.Raw)
	}
	for _, step := range []struct {
		pct     float64
		serving string
	}{{10, v1}, {50, v2.ID}, {100, v2.ID}} {
		b := deployBody(v2.ID, step.pct, v1, 100-step.pct)
		if step.pct == 100 {
			b = deployBody(v2.ID, 100)
		}
		if r := call(t, s, "POST", acctPath("workers/scripts/roll/deployments"), tok, b, ""); r.Status != 200 {
			t.Fatalf("deploy %v %%: %d %s", step.pct, r.Status, r.Raw)
		}
		if got := s.Scripts()[0].VersionID; got != step.serving {
			t.Errorf("at %v %% the current version is %s, want %s", step.pct, got, step.serving)
		}
	}
	if !strings.Contains(content(), "// v2") {
		t.Fatal("content after 100 % is not version 2")
	}
	// Rollback: version 1 at 100 % again.
	if r := call(t, s, "POST", acctPath("workers/scripts/roll/deployments"), tok, deployBody(v1, 100), ""); r.Status != 200 {
		t.Fatalf("rollback: %s", r.Raw)
	}
	if strings.Contains(content(), "// v2") {
		t.Fatal("content after rollback is still version 2")
	}
	deps := s.Deployments("roll")
	if len(deps) != 5 || deps[0].Traffic[0].VersionID != v1 || deps[1].Traffic[0].VersionID != v2.ID {
		t.Fatalf("deployments newest first: %+v", deps)
	}
	// The one in force cannot be deleted, an older one can.
	if r := call(t, s, "DELETE", acctPath("workers/scripts/roll/deployments/"+deps[0].ID), tok, nil, ""); r.Status != http.StatusBadRequest {
		t.Fatalf("delete in force: %d %s", r.Status, r.Raw)
	}
	if r := call(t, s, "DELETE", acctPath("workers/scripts/roll/deployments/"+deps[1].ID), tok, nil, ""); r.Status != 200 {
		t.Fatalf("delete old: %d %s", r.Status, r.Raw)
	}

	var page struct {
		Items []struct {
			ID     string
			Number int
		}
	}
	r = call(t, s, "GET", acctPath("workers/scripts/roll/versions?per_page=1"), tok, nil, "")
	r.result(t, &page)
	if len(page.Items) != 1 || page.Items[0].Number != 2 {
		t.Fatalf("versions page 1 of 1 each: %s", r.Raw)
	}
	r = call(t, s, "GET", acctPath("workers/scripts/roll/versions?deployable=true&per_page=1"), tok, nil, "")
	r.result(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("deployable ignores paging: %s", r.Raw)
	}
	if r := call(t, s, "GET", acctPath("workers/scripts/roll/versions/"+v2.ID), tok, nil, ""); r.Status != 200 || !strings.Contains(string(r.Raw), `"etag"`) {
		t.Fatalf("get version: %d %s", r.Status, r.Raw)
	}
}

func TestDeploymentsRefused(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	uploadScript(t, s, "refuse")
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	v1 := s.Scripts()[0].VersionID
	body, ct := versionUpload(t, helloModule+"// 2", "")
	r := call(t, s, "POST", acctPath("workers/scripts/refuse/versions"), tok, body, ct)
	var v2 struct{ ID string }
	r.result(t, &v2)
	body, ct = versionUpload(t, helloModule+"// 3", "")
	r = call(t, s, "POST", acctPath("workers/scripts/refuse/versions"), tok, body, ct)
	var v3 struct{ ID string }
	r.result(t, &v3)

	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"sum below 100", deployBody(v1, 50, v2.ID, 40), "add up to 90"},
		{"three versions", deployBody(v1, 50, v2.ID, 25, v3.ID, 25), "one or two"},
		{"no versions", []byte(`{"strategy":"percentage","versions":[]}`), "one or two"},
		{"twice the same", deployBody(v1, 50, v1, 50), "listed twice"},
		{"unknown version", deployBody("00000000-0000-4000-8000-000000000000", 100), "is not a version of refuse"},
		{"above 100", deployBody(v1, 150, v2.ID, -50), "0 to 100"},
		{"wrong strategy", []byte(`{"strategy":"immediate","versions":[{"version_id":"` + v1 + `","percentage":100}]}`), "the only strategy"},
		{"not json", []byte(`{`), msgMalformedJSON},
	}
	for _, tc := range tests {
		r := call(t, s, "POST", acctPath("workers/scripts/refuse/deployments"), tok, tc.body, "")
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Raw), tc.want) {
			t.Errorf("%s: %d %s, want 400 naming %q", tc.name, r.Status, r.Raw, tc.want)
		}
	}
	if r := call(t, s, "POST", acctPath("workers/scripts/ghost/deployments"), tok, deployBody(v1, 100), ""); r.Status != 404 {
		t.Errorf("deploy to a missing Worker: %d %s", r.Status, r.Raw)
	}
	body, ct = versionUpload(t, helloModule, "")
	if r := call(t, s, "POST", acctPath("workers/scripts/ghost/versions"), tok, body, ct); r.Status != 404 {
		t.Errorf("version of a missing Worker: %d %s", r.Status, r.Raw)
	}
	body, ct = uploadBody(t, map[string]string{"body_part": "worker.js"}, upPart{form: "worker.js", file: "worker.js", ctype: "application/javascript", content: []byte("x")})
	if r := call(t, s, "POST", acctPath("workers/scripts/refuse/versions"), tok, body, ct); r.Status != 400 {
		t.Errorf("service-worker version upload: %d %s", r.Status, r.Raw)
	}
	reader, _ := mint(t, s, []string{pgWorkersRead})
	if r := call(t, s, "POST", acctPath("workers/scripts/refuse/deployments"), reader, deployBody(v1, 100), ""); r.Status != http.StatusForbidden {
		t.Errorf("deploy with a read token: %d %s", r.Status, r.Raw)
	}
	if d := s.Deployments("refuse"); len(d) != 1 {
		t.Fatalf("refused deployments changed traffic: %+v", d)
	}
}

// TestVersionHistoryBounded: old versions are dropped, but never one the
// deployment in force serves.
func TestVersionHistoryBounded(t *testing.T) {
	t.Parallel()
	s, _ := newTestSandbox(t, Options{})
	uploadScript(t, s, "many")
	tok, _ := mint(t, s, []string{pgWorkersWrite})
	first := s.Scripts()[0].VersionID
	for i := range maxVersionsKept + 5 {
		body, ct := versionUpload(t, fmt.Sprintf("%s// %d", helloModule, i), "")
		if r := call(t, s, "POST", acctPath("workers/scripts/many/versions"), tok, body, ct); r.Status != 200 {
			t.Fatal(string(r.Raw))
		}
	}
	sc := s.Scripts()[0]
	if sc.Versions != maxVersionsKept || sc.VersionID != first {
		t.Fatalf("kept %d versions, serving %s (want %d, %s)", sc.Versions, sc.VersionID, maxVersionsKept, first)
	}
}

func FuzzParseDeployment(f *testing.F) {
	for _, s := range []string{
		`{"strategy":"percentage","versions":[{"version_id":"a","percentage":100}]}`,
		`{"strategy":"percentage","versions":[{"version_id":"a","percentage":10},{"version_id":"b","percentage":90}]}`,
		`{"strategy":"percentage","versions":[{"version_id":"a","percentage":1e308},{"version_id":"b","percentage":-1e308}]}`,
		`{"strategy":"percentage","versions":[{"version_id":"a","percentage":33.3},{"version_id":"b","percentage":66.7}]}`,
		`{}`, `null`, `{"versions":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseDeployment(body)
		if err != nil {
			return
		}
		sum := 0.0
		for _, sh := range req.Shares {
			if sh.Percentage < 0 || sh.Percentage > 100 || sh.VersionID == "" {
				t.Fatalf("accepted %+v", req)
			}
			sum += sh.Percentage
		}
		if len(req.Shares) < 1 || len(req.Shares) > 2 || sum < 99.99 || sum > 100.01 {
			t.Fatalf("accepted %+v", req)
		}
	})
}
