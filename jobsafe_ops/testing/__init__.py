"""Throwaway hosts for the demo, the e2e tests and the benches: `world` (real sshd hosts
on loopback and the demo's toy project) and `pueue/` (a stand-in for pueue 4.0.4, used
when real pueue is not on PATH). Shipped in the package so `jobsafe demo` works from an
installed wheel; nothing here is imported by the commands an operator runs on real hosts."""
