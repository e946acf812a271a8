package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// UIDs and names the generated objects use.
const (
	secondaryCaptureStorage = "1.2.840.10008.5.1.4.1.1.7"
	explicitVRLittleEndian  = "1.2.840.10008.1.2.1"
)

// geometry is the image matrix of a generated object: 16-bit MONOCHROME2,
// so its Pixel Data is rows*cols*2 bytes.
type geometry struct{ rows, cols int }

func (g geometry) pixelBytes() int64 { return int64(g.rows) * int64(g.cols) * 2 }

var (
	smallGeometry = geometry{rows: 256, cols: 128}   // 64 KiB of pixels
	largeGeometry = geometry{rows: 1920, cols: 2048} // 7.5 MiB of pixels
)

// hugeGeometry is the smallest matrix 16384 columns wide holding at least
// size bytes of pixels. Rows is a US, so this reaches about 2 GiB; that is
// enough to prove streaming, and one frame keeps the object simple.
func hugeGeometry(size int64) (geometry, error) {
	const cols = 16384
	rows := (size + 2*cols - 1) / (2 * cols)
	if size <= 0 || rows > 65535 {
		return geometry{}, fmt.Errorf("--huge-size %d: must be 1..%d bytes", size, int64(65535)*2*cols)
	}
	return geometry{rows: int(rows), cols: cols}, nil
}

// objectSet is a directory of generated objects sent in one association.
type objectSet struct {
	Name  string
	Files []string
	Bytes int64 // sum of the file sizes
}

// generateSet writes n objects of geometry g into dir, all of one study and
// series, their pixels filled from rng so that nothing on the way can
// compress them. The first one is checked with dcmdump.
func generateSet(ctx context.Context, dir, name string, n int, g geometry, rng io.Reader) (objectSet, error) {
	set := objectSet{Name: name}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return set, err
	}
	study, series := harness.NewUID(), harness.NewUID()
	for i := 1; i <= n; i++ {
		if err := ctx.Err(); err != nil {
			return set, err
		}
		path := filepath.Join(dir, fmt.Sprintf("%s-%05d.dcm", name, i))
		size, sop, err := writeObject(path, g, study, series, i, rng)
		if err != nil {
			return set, err
		}
		if i == 1 { // fail before writing the rest
			if err := checkWithDcmdump(ctx, path, sop); err != nil {
				return set, err
			}
		}
		set.Files = append(set.Files, path)
		set.Bytes += size
	}
	return set, nil
}

// writeObject writes one Part 10 file (PS3.10 7.1) of Secondary Capture
// Image Storage in Explicit VR Little Endian and returns its size and SOP
// Instance UID. With pixels == nil the Pixel Data is left as a hole (a
// sparse file), so a huge object costs no disk.
func writeObject(path string, g geometry, study, series string, instance int, pixels io.Reader) (int64, string, error) {
	sop := harness.NewUID()
	meta := harness.FileMeta{
		MediaStorageSOPClassUID:    secondaryCaptureStorage,
		MediaStorageSOPInstanceUID: sop,
		TransferSyntaxUID:          explicitVRLittleEndian,
		ImplementationVersionName:  "DICOMGW_BENCH",
	}
	size, err := harness.WritePart10(path, meta, scImage(g, sop, study, series, instance), g.pixelBytes(), pixels)
	return size, sop, err
}

// scImage is the data set up to and including the Pixel Data element's
// header: the type 1 and 2 attributes of the SC Image IOD (PS3.3 A.8.1),
// in ascending tag order.
func scImage(g geometry, sop, study, series string, instance int) harness.Elements {
	var ds harness.Elements
	ds.Str(0x0008, 0x0016, "UI", secondaryCaptureStorage)
	ds.Str(0x0008, 0x0018, "UI", sop)
	ds.Str(0x0008, 0x0020, "DA", "20240101")
	ds.Str(0x0008, 0x0030, "TM", "120000")
	ds.Str(0x0008, 0x0050, "SH", "")
	ds.Str(0x0008, 0x0060, "CS", "OT")
	ds.Str(0x0008, 0x0064, "CS", "WSD")
	ds.Str(0x0008, 0x0090, "PN", "")
	ds.Str(0x0010, 0x0010, "PN", "BENCH^DICOMGW")
	ds.Str(0x0010, 0x0020, "LO", "BENCH")
	ds.Str(0x0010, 0x0030, "DA", "")
	ds.Str(0x0010, 0x0040, "CS", "")
	ds.Str(0x0020, 0x000D, "UI", study)
	ds.Str(0x0020, 0x000E, "UI", series)
	ds.Str(0x0020, 0x0010, "SH", "1")
	ds.Str(0x0020, 0x0011, "IS", "1")
	ds.Str(0x0020, 0x0013, "IS", strconv.Itoa(instance))
	ds.Str(0x0020, 0x0020, "CS", "")
	ds.US(0x0028, 0x0002, 1)
	ds.Str(0x0028, 0x0004, "CS", "MONOCHROME2")
	ds.US(0x0028, 0x0010, uint16(g.rows))
	ds.US(0x0028, 0x0011, uint16(g.cols))
	ds.US(0x0028, 0x0100, 16)
	ds.US(0x0028, 0x0101, 16)
	ds.US(0x0028, 0x0102, 15)
	ds.US(0x0028, 0x0103, 0)
	// Pixel Data: header only, the value follows.
	ds.Header(0x7FE0, 0x0010, "OW", uint32(g.pixelBytes()))
	return ds
}

// checkWithDcmdump has dcmtk parse a generated file: a benchmark of
// objects that a real DICOM toolkit rejects would measure nothing. Warnings
// count as failures too. dcmdump loads no large value, so this is cheap
// even for the huge object.
func checkWithDcmdump(ctx context.Context, path, sop string) error {
	cmd := exec.CommandContext(ctx, "dcmdump", path)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		return fmt.Errorf("dcmdump cannot parse generated %s (%v):\n%s%s", path, err, out, stderr.String())
	}
	if !strings.Contains(string(out), "(0008,0018) UI ["+sop+"]") {
		return fmt.Errorf("dcmdump does not show SOP Instance UID %s in %s:\n%s", sop, path, out)
	}
	return nil
}

// newPixelSource is a fast, seeded stream of pseudo-random bytes (ChaCha8
// produces several GB/s: generation costs little next to the transfers).
func newPixelSource() io.Reader {
	var seed [32]byte
	rand.Read(seed[:])
	return mrand.NewChaCha8(seed)
}
