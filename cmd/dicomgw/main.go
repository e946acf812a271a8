// Command dicomgw is a DICOM gateway: it receives objects with C-STORE,
// keeps them in a durable spool and forwards them.
//
//	dicomgw serve [flags]          run the gateway
//	dicomgw echo [flags] HOST:PORT send a C-ECHO (verification) to a DICOM peer
//	dicomgw spool stats|ls|retry|purge --spool-dir DIR
//	dicomgw version                print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// Stamped by the Makefile (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: dicomgw <command> [flags]

commands:
  serve      run the gateway (C-STORE SCP into the spool)
  echo       send a C-ECHO to a DICOM peer: dicomgw echo [flags] HOST:PORT
  spool      inspect and repair the spool: stats, ls, retry, purge
  check-config  check flags and flags files without starting: dicomgw check-config --flagfile FILE
  version    print the version

Run "dicomgw <command> --help" for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "echo":
		return echo(args[1:], stdout, stderr)
	case "spool":
		return spoolCmd(args[1:], stdout, stderr)
	case "check-config":
		return checkConfig(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "dicomgw %s (commit %s)\n", version, commit)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "dicomgw: unknown command %q\n\n%s", args[0], usage)
	return 2
}
