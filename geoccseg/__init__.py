"""geoccseg: roads and cracks from imagery with very few labels.

The package follows the data flow: ``io`` reads scenes, labels and areas of interest;
``data`` samples chips; ``models`` and ``losses`` hold the method; ``train`` fits it;
``inference`` predicts whole scenes block by block; ``vectorize`` turns probabilities into
polylines; ``evaluate`` scores them. The CLI in ``cli`` is a thin layer over these.
"""

__version__ = "0.1.0"
