// Command dicomgw-healthcheck is the container image's HEALTHCHECK and
// Kubernetes preStop helper. The runtime image has no shell, curl or wget,
// so this small static binary does the two things they would:
//
//	dicomgw-healthcheck [--url URL] [--timeout D]   GET URL (default the gateway's /healthz); exit 0 on 200, else 1
//	dicomgw-healthcheck --sleep D                    wait D, then exit 0 (a preStop hook on Kubernetes < 1.30)
//
// The URL can also come from $DICOMGW_HEALTHCHECK_URL, for a gateway whose
// --metrics-listen is not :9477.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

const defaultURL = "http://127.0.0.1:9477/healthz"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("dicomgw-healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", envOr("DICOMGW_HEALTHCHECK_URL", defaultURL), "URL to GET; healthy when it answers 200")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	sleep := fs.Duration("sleep", 0, "only wait this long, then exit 0 (preStop hook)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "dicomgw-healthcheck: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *sleep > 0 {
		time.Sleep(*sleep)
		return 0
	}
	if err := check(*url, *timeout); err != nil {
		fmt.Fprintf(stderr, "dicomgw-healthcheck: %v\n", err)
		return 1
	}
	return 0
}

// check GETs url directly (never through a proxy from the environment) and
// wants a 200.
func check(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
