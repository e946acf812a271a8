package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// stowClient is the yardstick for "the endpoint's own limit": a plain
// STOW-RS client (PS3.18 10.5) that posts Part 10 files as they are on
// disk, in batches of a fixed size, with a fixed number of requests in
// flight. No spool, no retries: what it takes is what the endpoint needs.
type stowClient struct {
	base    string // DICOMweb service root, no trailing slash
	batch   int    // files per request
	workers int    // requests in flight
	http    *http.Client
}

func newSTOWClient(base string, batch, workers int) *stowClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = workers
	return &stowClient{base: strings.TrimRight(base, "/"), batch: batch, workers: workers, http: &http.Client{Transport: tr}}
}

// send posts every file and returns the number of requests made. Any
// answer but 200 with every instance in ReferencedSOPSequence is an error.
func (s *stowClient) send(ctx context.Context, files []string) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan []string)
	errs := make(chan error, s.workers)
	var wg sync.WaitGroup
	for range s.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := s.post(ctx, b); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
	n := 0
feed:
	for i := 0; i < len(files); i += s.batch {
		select {
		case batches <- files[i:min(i+s.batch, len(files))]:
			n++
		case <-ctx.Done():
			break feed
		}
	}
	close(batches)
	wg.Wait()
	select {
	case err := <-errs:
		return n, err
	default:
		return n, ctx.Err()
	}
}

// post sends one multipart/related request (RFC 2387; PS3.18 8.6.1.2),
// streaming the files from disk.
func (s *stowClient) post(ctx context.Context, files []string) error {
	var rb [16]byte
	rand.Read(rb[:])
	boundary := "bench-" + hex.EncodeToString(rb[:])
	var readers []io.Reader
	var length int64
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for i, path := range files {
		open := "\r\n--" + boundary + "\r\nContent-Type: application/dicom\r\n\r\n"
		if i == 0 {
			open = open[2:]
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		opened = append(opened, f)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		readers = append(readers, strings.NewReader(open), f)
		length += int64(len(open)) + fi.Size()
	}
	closing := "\r\n--" + boundary + "--\r\n"
	readers = append(readers, strings.NewReader(closing))
	length += int64(len(closing))

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/studies", io.MultiReader(readers...))
	if err != nil {
		return err
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", mime.FormatMediaType("multipart/related", map[string]string{"type": "application/dicom", "boundary": boundary}))
	req.Header.Set("Accept", "application/dicom+json")
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("STOW-RS answered %s: %.300s", resp.Status, body)
	}
	if n := referencedCount(body); n != len(files) {
		return fmt.Errorf("STOW-RS stored %d of %d instances: %.300s", n, len(files), body)
	}
	return nil
}

// referencedCount is the number of items in a STOW-RS response's
// ReferencedSOPSequence (0008,1199), DICOM JSON (PS3.18 F.2).
func referencedCount(body []byte) int {
	var top map[string]struct {
		Value []json.RawMessage `json:"Value"`
	}
	if json.NewDecoder(bytes.NewReader(body)).Decode(&top) != nil {
		return -1
	}
	return len(top["00081199"].Value)
}

// pollUntil calls count every interval until it reports at least n, and
// returns when that was seen; it gives up at timeout or when ctx ends.
func pollUntil(ctx context.Context, n int, interval, timeout time.Duration, count func() (int, error)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := count()
		now := time.Now()
		if err == nil && got >= n {
			return now, nil
		}
		if now.After(deadline) {
			return now, fmt.Errorf("%d of %d after %v (last error: %v)", got, n, timeout, err)
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(interval):
		}
	}
}
