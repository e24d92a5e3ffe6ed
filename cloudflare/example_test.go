package cloudflare_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/tollgatehq/tollgate/cloudflare"
	"github.com/tollgatehq/tollgate/cloudflare/sandbox"
)

// Example wires a Broker to an in-process sandbox, as `tollgate serve`
// does when no Cloudflare credentials are configured, and prices a domain
// with a token minted for that one quote.
func Example() {
	ctx := context.Background()
	sb, err := sandbox.New(sandbox.Options{})
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(sb)
	defer srv.Close()

	broker, err := cloudflare.NewBroker(cloudflare.Config{
		APIBase:     srv.URL + sandbox.APIPrefix,
		AccountID:   sb.AccountID(),
		ParentToken: sb.ParentToken(),
	})
	if err != nil {
		panic(err)
	}
	if _, err := broker.Sweep(ctx); err != nil { // leftovers of a crash
		panic(err)
	}
	s, err := broker.Session(ctx, cloudflare.PurposeQuote, "op-1")
	if err != nil {
		panic(err)
	}
	checks, err := s.CheckDomains(ctx, "example-tollgate.com", "google.com")
	if err != nil {
		panic(err)
	}
	if err := s.Close(ctx); err != nil {
		panic(err)
	}
	for _, c := range checks {
		if c.Registrable {
			fmt.Printf("%s: %s %s a year\n", c.Name, c.RegistrationCost, c.Currency)
		} else {
			fmt.Printf("%s: %s\n", c.Name, c.Reason)
		}
	}
	fmt.Println("tokens alive:", broker.Alive())
	// Output:
	// example-tollgate.com: 10.44 USD a year
	// google.com: domain_unavailable
	// tokens alive: 0
}
