"""A suite of drift expressions with known verdicts, for the symbolic prover's reach and soundness.

``VALID``: every one satisfies f >= 0, f(1, A) = 0 and df/dr(1, A) = 0 (closed forms from the papers, the
shapes users write, convex functions with a flat tangent at r = 1, branch-wise forms). ``COVERED`` are
the valid ones the proof rules are meant to prove; the others are valid but beyond them (the prover
must then say UNDECIDED, never INVALID). ``INVALID``: each breaks a condition, many only slightly
(a small negative pocket, an offset, a kink, the wrong sign on one branch).
"""

VALID = {
    "ppo clip": "Max(0, (r - Min(Max(r, 0.8), 1.2))*A)",
    "dpo (eq. 9)": "Piecewise((Max(0, (r - 1)*A - 2*tanh((r - 1)*A/2)), A >= 0), "
                   "(Max(0, A*log(r) - 0.6*tanh(A*log(r)/0.6)), True))",
    "square": "(r - 1)**2",
    "square times A^2": "(r - 1)**2*A**2",
    "square times |A|": "Abs(A)*(r - 1)**2",
    "kl (r - 1 - log r)": "r - 1 - log(r)",
    "kl times A^2": "A**2*(r - 1 - log(r))",
    "exp tangent": "exp(r - 1) - r",
    "reverse kl": "r*log(r) - r + 1",
    "cosh of log r": "cosh(log(r)) - 1",
    "log r squared": "log(r)**2",
    "|A| log r squared": "Abs(A)*log(r)**2",
    "softplus of a square": "log(1 + exp((r - 1)**2*A**2)) - log(2)",
    "branch-wise": "Piecewise(((r - 1)**2*A, A >= 0), (-log(r)**2*A, True))",
    "softplus name": "softplus((r - 1)**2) - log(2)",
    "tanh of a square": "tanh((r - 1)**2)",
    "1 - exp(-x^2)": "1 - exp(-(r - 1)**2)",
    "sqrt hyperbola": "sqrt(1 + (r - 1)**2) - 1",
    "quartic plus": "(r - 1)**4 + (r - 1)**2*Abs(A)",
    "relu of square": "Max(0, (r - 1)**2*A)",
    "relu with a margin": "Max(0, (r - 1)**2*A**2 - (r - 1)**2/10)",
    "square over 1 + r": "(r - 1)**2/(1 + r)",
    "square over r": "(r - 1)**2/r",
    "r + 1/r - 2": "r + 1/r - 2",
    "cosh(r - 1) - 1": "cosh(r - 1) - 1",
    "sinh squared": "sinh(r - 1)**2",
    "mixed (issue 30)": "0.5*(r - 1)**2*Abs(A) + 0.1*(r - 1 - log(r))",
    "exp tangent times A^2": "(exp(r - 1) - r)*A**2",
    "branch-wise squares": "Piecewise(((r - 1)**2, A >= 0), (log(r)**2, True))",
    "sigmoid of a square": "sigmoid((r - 1)**2) - 0.5",
    "expm1 of a square": "expm1((r - 1)**2)",
    "log1p of a square": "log1p((r - 1)**2)",
    "expanded square": "r**2 - 2*r + 1",
    "time-weighted square": "t*(r - 1)**2",
    "time-weighted kl": "(1 + t)*(r - 1 - log(r))",
    "heaviside times A": "Heaviside(A)*(r - 1)**2*A",
}
# Valid, but beyond the rules: Heaviside(A)*A >= 0 needs one factor's sign from another's, and the slope of
# Max(0, (r - 1)**2 (A**2 - 1/10)) near r = 1 depends on the sign of A**2 - 1/10, which the one-sided limits
# cannot split on.
NOT_COVERED = ("heaviside times A", "relu with a margin")
COVERED = [name for name in VALID if name not in NOT_COVERED]

INVALID = {
    "kink |r - 1|": "Abs(r - 1)",
    "linear": "r - 1",
    "offset": "(r - 1)**2 - 0.01",
    "square times A": "(r - 1)**2*A",
    "log r": "log(r)",
    "tilted kl": "r - 1 - 2*log(r)",
    "quartic takes over": "(r - 1)**2 - (r - 1)**4",
    "relu kink": "Max(0, A*(r - 1))",
    "square times (A - 1)": "(r - 1)**2*(A - 1)",
    "exp without tangent": "exp(r - 1) - 1",
    "cosh offset": "cosh(r - 1) - 1.01",
    "pocket far from 1": "(r - 1)**2*(1 - 10*(r - 1)**2)",
    "cube": "(r - 1)**3",
    "pocket near A = 0": "(r - 1)**2*A**2 - 1e-3*(r - 1)**2",
    "sinh": "sinh(r - 1)",
    "tanh sign change": "tanh(A*(r - 1))",
    "wrong branch sign": "Piecewise(((r - 1)**2, A >= 0), (-(r - 1)**2, True))",
    "branch-wise near miss": "Piecewise(((r - 1)**2*A, A >= 0), (log(r)**2*A, True))",
    "relu pocket": "Max(0, (r - 1)**2*A**2 - 0.1*(r - 1)**2) - 0.001*(r - 1)**2",
}
