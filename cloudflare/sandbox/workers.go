package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"regexp"
	"sort"
	"time"
)

// scriptNameRE is the shape of a Worker name Cloudflare accepts.
var scriptNameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,62}$`)

// handlers lists the event handlers the version's main module mentions.
func (v *versionRec) handlers() []string {
	out := []string{}
	for _, m := range v.Modules {
		if m.Name != v.MainModule {
			continue
		}
		for _, h := range []string{"fetch", "scheduled", "queue", "email"} {
			if bytes.Contains(m.Content, []byte(h)) {
				out = append(out, h)
			}
		}
	}
	return out
}

// json is the script as the scripts list and upload answer it, described
// by its current version.
func (sc *scriptRec) json() map[string]any {
	v := sc.current()
	return map[string]any{
		"id":                  sc.Name,
		"tag":                 sc.Tag,
		"etag":                v.Etag,
		"created_on":          sc.CreatedOn.Format(time.RFC3339Nano),
		"modified_on":         sc.ModifiedOn.Format(time.RFC3339Nano),
		"compatibility_date":  v.CompatibilityDate,
		"compatibility_flags": []string{},
		"handlers":            v.handlers(),
		"has_modules":         true,
		"has_assets":          false,
		"last_deployed_from":  "api",
		"logpush":             false,
		"usage_model":         "standard",
		"entry_point":         v.MainModule,
		"tail_consumers":      nil,
		"tags":                nil,
	}
}

// uploadVersion checks a multipart upload and makes it a version (not yet
// in st): the etag is derived from the content, so the same upload keeps it.
// A version upload (as opposed to a script upload) must be a module Worker.
func uploadVersion(name string, r *http.Request, body []byte, now time.Time, triggeredBy string) (*versionRec, error) {
	up, err := parseScriptUpload(r.Header.Get("Content-Type"), body, now)
	if errors.Is(err, errTooLarge) {
		return nil, failf(http.StatusBadRequest, codeScriptTooLarge, "%s", err.Error())
	}
	if err != nil {
		return nil, failf(http.StatusBadRequest, codeScriptInvalid, "%s", err.Error())
	}
	main := up.Meta.MainModule
	if main == "" {
		if triggeredBy == triggeredByVersion {
			return nil, failf(http.StatusBadRequest, codeScriptInvalid, "metadata.main_module: required; a version upload takes a module Worker")
		}
		main = up.Meta.BodyPart
	}
	parts := [][]byte{[]byte(name), []byte(main), []byte(up.Meta.CompatibilityDate)}
	for _, m := range up.Modules {
		parts = append(parts, []byte(m.Name), []byte(m.ContentType), m.Content)
	}
	id, err := newUUID()
	if err != nil {
		return nil, err
	}
	return &versionRec{
		ID: id, Etag: deterministicHex(parts...) + deterministicHex(append(parts, []byte("etag"))...),
		MainModule: main, CompatibilityDate: up.Meta.CompatibilityDate, Modules: up.Modules,
		CreatedOn: now, Source: "api", TriggeredBy: triggeredBy,
		Tag: up.Meta.Annotations.Tag, Message: up.Meta.Annotations.Message,
	}, nil
}

// handlePutScript uploads a Worker the classic way: a new version, deployed
// at once to 100 % of the traffic.
func (s *Sandbox) handlePutScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	if !scriptNameRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, codeScriptName, fmt.Sprintf("Worker name %q is invalid: use 1 to 63 lowercase letters, digits, - and _, not starting with -", name))
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	now := s.clock().UTC()
	v, err := uploadVersion(name, r, body, now, triggeredByUpload)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	dep, err := newDeployment(now, triggeredByUpload, "", []shareRec{{VersionID: v.ID, Percentage: 100}})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var res map[string]any
	err = s.commitLocked(func(st *state) error {
		sc := st.Scripts[name]
		if sc == nil {
			sc = &scriptRec{Name: name, Tag: deterministicHex([]byte("tag"), []byte(name)), CreatedOn: now}
		}
		sc.addVersion(v)
		sc.addDeployment(dep)
		st.Scripts[name] = sc
		res = sc.json()
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	res["startup_time_ms"] = 0
	writeResult(w, http.StatusOK, res)
}

func (s *Sandbox) handleListScripts(w http.ResponseWriter, _ *http.Request, _ *tokenRec) {
	s.mu.Lock()
	names := make([]string, 0, len(s.st.Scripts))
	for n := range s.st.Scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]map[string]any, 0, len(names))
	for _, n := range names {
		out = append(out, s.st.Scripts[n].json())
	}
	s.mu.Unlock()
	writeResult(w, http.StatusOK, out)
}

// handleGetScript answers with the current version's modules as
// multipart/form-data, as Cloudflare does for module Workers, naming the
// entry point in the cf-entrypoint header.
func (s *Sandbox) handleGetScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	s.mu.Lock()
	sc := s.st.Scripts[name]
	var v *versionRec
	if sc != nil {
		v = sc.current()
	}
	s.mu.Unlock()
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, m := range v.Modules {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, m.Name, m.Name))
		h.Set("Content-Type", m.ContentType)
		pw, err := mw.CreatePart(h)
		if err != nil {
			writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
			return
		}
		_, _ = pw.Write(m.Content)
	}
	_ = mw.Close()
	w.Header().Set("Content-Type", mw.FormDataContentType())
	w.Header().Set("cf-entrypoint", v.MainModule)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// handleDeleteScript deletes a Worker with its versions and deployments,
// and detaches its custom domains.
func (s *Sandbox) handleDeleteScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.commitScriptLocked(name, func(st *state, _ *scriptRec) error {
		delete(st.Scripts, name)
		for id, d := range st.Domains {
			if d.Service == name {
				delete(st.Domains, id)
			}
		}
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, nil)
}

func (s *Sandbox) handleAccountSubdomain(w http.ResponseWriter, _ *http.Request, _ *tokenRec) {
	writeResult(w, http.StatusOK, map[string]string{"subdomain": workersSubdomain})
}

// parseSubdomainToggle parses a scripts/{name}/subdomain POST body.
func parseSubdomainToggle(body []byte) (enabled, previews bool, err error) {
	var req struct {
		Enabled         *bool `json:"enabled"`
		PreviewsEnabled *bool `json:"previews_enabled"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return false, false, err
	}
	if req.Enabled == nil {
		return false, false, errors.New("enabled: required; true or false")
	}
	if req.PreviewsEnabled != nil {
		previews = *req.PreviewsEnabled
	}
	return *req.Enabled, previews, nil
}

func (s *Sandbox) handleScriptSubdomain(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	if r.Method != http.MethodPost {
		s.mu.Lock()
		defer s.mu.Unlock()
		sc := s.st.Scripts[name]
		if sc == nil {
			writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
			return
		}
		writeResult(w, http.StatusOK, map[string]bool{"enabled": sc.WorkersDev, "previews_enabled": sc.PreviewsEnabled})
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	enabled, previews, err := parseSubdomainToggle(body)
	if err != nil {
		writeBadBody(w, codeScriptInvalid, err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.commitScriptLocked(name, func(_ *state, sc *scriptRec) error {
		sc.WorkersDev, sc.PreviewsEnabled = enabled, previews
		return nil
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeResult(w, http.StatusOK, map[string]bool{"enabled": enabled, "previews_enabled": previews})
}
