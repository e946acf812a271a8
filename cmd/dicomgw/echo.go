package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// echo is a C-ECHO SCU on the gateway's own requestor side: the quickest
// way for an admin to check that a DICOM peer (or dicomgw itself) answers.
func echo(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("dicomgw echo", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	calling := fs.String("calling-ae", "DICOMGW-ECHO", "our (calling) AE title")
	called := fs.String("called-ae", "DICOMGW", "the peer's (called) AE title")
	timeout := fs.Duration("timeout", 10*time.Second, "timeout for connecting and for each exchange")
	useTLS := fs.Bool("tls", false, "DICOM TLS (the peer's TLS port, conventionally 2762)")
	caFile := fs.String("tls-ca", "", "PEM CA certificates to verify the peer with (default: the system's)")
	certFile := fs.String("tls-cert", "", "PEM client certificate, for peers that require one")
	keyFile := fs.String("tls-key", "", "PEM private key of --tls-cert")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: dicomgw echo [flags] HOST:PORT\n\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "dicomgw echo: %v (see dicomgw echo --help)\n", err)
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	addr := fs.Arg(0)
	var tlsCfg *tls.Config
	if *useTLS {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			pool, err := certPool(*caFile, false)
			if err != nil {
				fmt.Fprintf(stderr, "dicomgw echo: --tls-ca: %v\n", err)
				return 2
			}
			tlsCfg.RootCAs = pool
		}
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				fmt.Fprintf(stderr, "dicomgw echo: --tls-cert/--tls-key: %v\n", err)
				return 2
			}
			tlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	c, err := dimse.Dial(ctx, addr, dimse.DialConfig{
		CallingAE: *calling,
		CalledAE:  *called,
		Timeout:   *timeout,
		TLS:       tlsCfg,
		Contexts: []dimse.ProposedContext{{
			AbstractSyntax:   uid.Verification,
			TransferSyntaxes: []string{uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian},
		}},
	})
	if err != nil {
		fmt.Fprintf(stderr, "dicomgw echo: %s: %v\n", addr, err)
		return 1
	}
	st, err := c.Echo()
	if err != nil {
		c.Abort()
		fmt.Fprintf(stderr, "dicomgw echo: %s: %v\n", addr, err)
		return 1
	}
	if err := c.Release(); err != nil {
		fmt.Fprintf(stderr, "dicomgw echo: %s: release: %v\n", addr, err)
		return 1
	}
	fmt.Fprintf(stdout, "C-ECHO %s (%s -> %s): status %v in %v\n", addr, *calling, *called, st, time.Since(start).Round(time.Microsecond))
	if st != dimse.StatusSuccess {
		return 1
	}
	return 0
}
