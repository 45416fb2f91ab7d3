"""brandguard: finds copies and knockoffs of brand imagery in marketplace listings.

Importing this package does no work: no model is loaded, no thread pool is started,
nothing is downloaded. Everything heavy happens behind explicit calls.
"""

__version__ = "0.1.0"
