"""Training data: dataset readers, the prepare stage (detect, filter, align, average per person, textures) and the
paper's augmentation by random morphs with gradient-domain compositing (Cole et al. CVPR 2017, Sec. 5 and 6).

Modules are imported explicitly (``facekit.data.prepare``, ``facekit.data.augment``, ...); this package imports nothing
heavy so that ``import facekit`` stays light.
"""

#: Smoothing for every spline warp between face landmarks (averaging, textures, morphs). dlib puts the inner-lip
#: points of a closed mouth exactly on top of each other (iBUG 62-68), which makes the interpolating spline singular;
#: 1e-2 (kernel units: pixels) makes the system well defined while moving the fit at other points by far less than a
#: pixel.
FACE_WARP_REGULARIZATION = 1e-2
