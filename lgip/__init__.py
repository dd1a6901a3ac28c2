"""The LGIP toolkit's library. The scripts at the top level are its users; see the
README's "Code layout" for which module holds what.
"""
