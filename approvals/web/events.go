package web

import (
	"fmt"
	"net/http"
	"time"
)

// heartbeat keeps an idle event stream open through proxies.
const heartbeat = 20 * time.Second

// events streams a "change" event whenever the ledger changes (in this
// process or another: Source.Changes), so open pages fetch their live part
// again. It ends with the session.
func (c *Console) events(w http.ResponseWriter, r *http.Request, s session) error {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported here", http.StatusNotImplemented)
		return nil
	}
	changes, stop := c.src.Changes()
	defer stop()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// A comment first, so the browser knows the stream is open.
	fmt.Fprint(w, ": tollgate console\nretry: 2000\n\n")
	fl.Flush()
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	end := time.NewTimer(s.expiresAt.Sub(c.now()))
	defer end.Stop()
	n := 0
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-end.C:
			fmt.Fprint(w, "event: signedout\ndata: session ended\n\n")
			fl.Flush()
			return nil
		case <-beat.C:
			fmt.Fprint(w, ": beat\n\n")
		case <-changes:
			n++
			fmt.Fprintf(w, "event: change\ndata: %d\n\n", n)
		}
		fl.Flush()
	}
}
