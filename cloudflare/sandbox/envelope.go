package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error codes the sandbox answers with. Those marked "real" are the codes
// and messages Cloudflare's API returns; the others are the sandbox's own
// choice where the public API reference publishes none (doc.go lists them).
const (
	codeInvalidToken       = 1000   // real: "Invalid API Token" (tokens/verify)
	codeTokenRequest       = 1001   // sandbox: invalid token-create body
	codeTokenNotFound      = 1003   // sandbox: no token with that id
	codeInvalidHeaders     = 6003   // real: "Invalid request headers"
	codeMalformedJSON      = 6007   // real: "Malformed JSON in request body"
	codeBadAuthHeader      = 6111   // real: "Invalid format for Authorization header"
	codeNoRoute            = 7000   // real: "No route for that URI"
	codeRateLimited        = 971    // real: "Please wait and consider throttling your request speed"
	codeUnauthorized       = 9109   // real: wrong account, or request IP not allowed
	codeAuthError          = 10000  // real: "Authentication error"
	codeWorkerNotFound     = 10007  // real: "This Worker does not exist on your account."
	codeUnknownError       = 10013  // real: "An unknown error has occurred"
	codeScriptName         = 10016  // sandbox: invalid Worker name
	codeScriptInvalid      = 10021  // real code for a rejected upload; message is the sandbox's
	codeScriptTooLarge     = 10027  // real code for an upload over the size limit
	codeRegistrarInvalid   = 10400  // sandbox: invalid registrar request
	codeRegistrarLimit     = 10403  // sandbox: account domain limit reached
	codeRegistrationGone   = 10404  // sandbox: no registration / workflow for that domain
	codeDomainTaken        = 10409  // sandbox: domain_unavailable on registration
	codeNotRegistrable     = 10422  // sandbox: extension or premium refusal on registration
	codeNoObject           = 7003   // real: "Could not route to ..., perhaps your object identifier is invalid?"
	codeZoneRequest        = 1101   // sandbox: invalid zones list query
	codeVersionNotFound    = 10222  // sandbox: no such Worker version
	codeDeploymentInvalid  = 10223  // sandbox: invalid deployment
	codeDeploymentNotFound = 10224  // sandbox: no such deployment
	codeDomainInvalid      = 100100 // sandbox: invalid custom-domain request
	codeDomainNoZone       = 100101 // sandbox: hostname not on a zone of the account
	codeDomainNotFound     = 100102 // sandbox: no such custom domain
)

const (
	msgAuthError      = "Authentication error"
	msgInvalidToken   = "Invalid API Token"
	msgUnauthorized   = "Unauthorized to access requested resource"
	msgRateLimited    = "Please wait and consider throttling your request speed"
	msgUnknownError   = "An unknown error has occurred"
	msgWorkerNotFound = "This Worker does not exist on your account."
	msgMalformedJSON  = "Malformed JSON in request body"
)

// apiError is one entry of the envelope's errors array.
type apiError struct {
	Code       int        `json:"code"`
	Message    string     `json:"message"`
	ErrorChain []apiError `json:"error_chain,omitempty"`
}

// apiMessage is one entry of the envelope's messages array.
type apiMessage struct {
	Code    int     `json:"code"`
	Message string  `json:"message"`
	Type    *string `json:"type"`
}

// envelope is Cloudflare's v4 response wrapper.
type envelope struct {
	Success    bool         `json:"success"`
	Errors     []apiError   `json:"errors"`
	Messages   []apiMessage `json:"messages"`
	Result     any          `json:"result"`
	ResultInfo any          `json:"result_info,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, env envelope) {
	if env.Errors == nil {
		env.Errors = []apiError{}
	}
	if env.Messages == nil {
		env.Messages = []apiMessage{}
	}
	b, err := json.Marshal(env)
	if err != nil {
		// Every result is built from plain structs; a marshal failure is a
		// sandbox bug, reported in Cloudflare's shape rather than half-written.
		status = http.StatusInternalServerError
		b, _ = json.Marshal(envelope{Errors: []apiError{{Code: codeUnknownError, Message: msgUnknownError}}, Messages: []apiMessage{}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeResult(w http.ResponseWriter, status int, result any) {
	writeJSON(w, status, envelope{Success: true, Result: result})
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, envelope{Errors: []apiError{{Code: code, Message: msg}}})
}

// apiErr is an error answer decided inside a state change: the change is
// refused and the answer is this status, code and message.
type apiErr struct {
	status, code int
	msg          string
}

func (e *apiErr) Error() string { return e.msg }

func failf(status, code int, format string, args ...any) *apiErr {
	return &apiErr{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// writeErr answers err: an *apiErr as itself, anything else (the state file
// could not be read or written) as Cloudflare's 500, logged.
func (s *Sandbox) writeErr(w http.ResponseWriter, err error) {
	var ae *apiErr
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.code, ae.msg)
		return
	}
	s.log.Error("sandbox: state change failed", "err", err)
	writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
}
