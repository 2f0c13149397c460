# (stand-in for Slicer's extension config / CPack includes: nothing to do without Slicer)
