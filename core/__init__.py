"""The ground floor: error types, manifest column names, provenance helpers, metrics, the evaluation
protocol and standardisation. Every other package may import it; it imports none of them."""
