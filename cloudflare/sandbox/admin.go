package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// AdminFaultsPath is the fault admin endpoint served with Options.Admin:
// GET answers the faults in force and how many requests they hold; POST
// replaces the faults with the JSON body ({} clears them). Loopback clients
// only. It is the sandbox's own, outside the Cloudflare API prefix.
const AdminFaultsPath = adminPrefix + "faults"

const adminPrefix = "/__sandbox/"

// maxAdminBody bounds a fault admin request body.
const maxAdminBody = 64 << 10

// maxFaultLatency bounds the latency the admin endpoint accepts; anything
// longer is a hang, which has its own switch.
const maxFaultLatency = 10 * time.Minute

// FaultsJSON is the wire form of Faults on the admin endpoint: rates as
// fractions, the latency as a Go duration string ("250ms").
type FaultsJSON struct {
	Latency         string  `json:"latency,omitempty"`
	ErrorRate       float64 `json:"error_rate,omitempty"`
	RateLimitRate   float64 `json:"rate_limit_rate,omitempty"`
	Hang            bool    `json:"hang,omitempty"`
	PathContains    string  `json:"path_contains,omitempty"`
	Method          string  `json:"method,omitempty"`
	FailAfterEffect bool    `json:"fail_after_effect,omitempty"`
}

// AdminStatus is what the admin endpoint answers: the faults in force and
// the number of requests the Hang fault holds right now.
type AdminStatus struct {
	Faults  FaultsJSON `json:"faults"`
	Hanging int        `json:"hanging"`
}

// JSON is f in its admin wire form.
func (f Faults) JSON() FaultsJSON {
	out := FaultsJSON{
		ErrorRate: f.ErrorRate, RateLimitRate: f.RateLimitRate, Hang: f.Hang,
		PathContains: f.PathContains, Method: f.Method, FailAfterEffect: f.FailAfterEffect,
	}
	if f.Latency > 0 {
		out.Latency = f.Latency.String()
	}
	return out
}

// ParseFaults decodes and validates an admin request body. Unknown fields,
// trailing data, a bad duration, rates outside 0..1 and a method that is not
// one are errors naming the field and what is allowed.
func ParseFaults(body []byte) (Faults, error) {
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return Faults{}, errors.New(`faults body: want a JSON object such as {"hang":true,"path_contains":"/registrar/registrations","method":"POST"}; {} clears every fault`)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var fj FaultsJSON
	if err := dec.Decode(&fj); err != nil {
		return Faults{}, fmt.Errorf("faults body: %v; want a JSON object with latency, error_rate, rate_limit_rate, hang, path_contains, method, fail_after_effect", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Faults{}, errors.New("faults body: trailing data after the JSON object; send exactly one object")
	}
	f := Faults{
		ErrorRate: fj.ErrorRate, RateLimitRate: fj.RateLimitRate, Hang: fj.Hang,
		PathContains: fj.PathContains, Method: strings.ToUpper(fj.Method), FailAfterEffect: fj.FailAfterEffect,
	}
	var errs []error
	if fj.Latency != "" {
		d, err := time.ParseDuration(fj.Latency)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("latency %q: want a Go duration such as 250ms or 2s", fj.Latency))
		case d < 0 || d > maxFaultLatency:
			errs = append(errs, fmt.Errorf("latency %s: allowed 0 to %s (use hang for longer)", d, maxFaultLatency))
		default:
			f.Latency = d
		}
	}
	if err := checkFaults(f); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Faults{}, errors.Join(errs...)
	}
	return f, nil
}

// serveAdmin answers the fault admin endpoint. The sandbox's Serve binds
// loopback only; the check here keeps that true when the handler is mounted
// elsewhere.
func (s *Sandbox) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if ip, ok := remoteIP(r); !ok || !ip.IsLoopback() {
		adminError(w, http.StatusForbidden, "the sandbox admin endpoint answers loopback clients only")
		return
	}
	if r.URL.Path != AdminFaultsPath {
		adminError(w, http.StatusNotFound, "no admin route "+r.URL.Path+"; the only one is "+AdminFaultsPath)
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
		if err != nil {
			adminError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("faults body: %v (limit %d bytes)", err, maxAdminBody))
			return
		}
		f, err := ParseFaults(body)
		if err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetFaults(f)
		s.log.Info("sandbox faults changed", "faults", fmt.Sprintf("%+v", f.JSON()))
	default:
		w.Header().Set("Allow", "GET, POST")
		adminError(w, http.StatusMethodNotAllowed, "use GET to read the faults or POST to replace them")
		return
	}
	writeAdmin(w, http.StatusOK, AdminStatus{Faults: s.Faults().JSON(), Hanging: s.Hanging()})
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeAdmin(w, status, map[string]string{"error": msg})
}

func writeAdmin(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
