// Package harness is what the interoperability tests (conformance/) and the
// benchmark (bench/) share: building and running the real dicomgw binary,
// dcmtk's storescp and Orthanc (a real DICOMweb endpoint) as child
// processes, running a tool to completion, reading the shared corpus and
// the gateway's spool, and writing synthetic DICOM Part 10 files.
//
// It imports nothing from pkg/ on purpose: it is the yardstick the gateway
// is measured with, so it encodes and decodes the little DICOM it needs by
// itself, and a bug in the gateway's codecs cannot hide in it.
package harness
